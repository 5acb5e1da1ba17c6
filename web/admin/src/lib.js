// Shared pieces: the SDK client, htm bound to Preact, the hash router, and small
// components (field errors, confirmation, toasts).
import { h } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import htm from "htm";
import PocketBase, { LocalAuthStore } from "pocketbase";

export const html = htm.bind(h);

// The dashboard's own token store: an app on the same origin keeps its own.
export const pb = new PocketBase(location.origin, new LocalAuthStore("basalt_admin_auth"));
pb.autoCancellation(false);

// "#/records/tasks?x=1" -> { path: "/records/tasks", query: URLSearchParams }
export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, q] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(q || "") };
}

export function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function go(path) {
  location.hash = "#" + path;
}

// A PocketBase error as { message, fields: { name: message } }.
export function errorOf(e) {
  const r = (e && e.response) || {};
  const fields = {};
  for (const [k, v] of Object.entries(r.data || {})) fields[k] = v && v.message ? v.message : String(v);
  const message = r.message || (e && e.message) || "Something went wrong.";
  return { message, fields, status: e && e.status };
}

export function FieldError({ err, name }) {
  const m = err && err.fields && err.fields[name];
  return m ? html`<div class="field-error" role="alert" data-error-for=${name}>${m}</div>` : null;
}

export function ErrorBanner({ err }) {
  if (!err) return null;
  return html`<div class="banner error" role="alert">${err.message}</div>`;
}

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

// What every modal dialog does for keyboard users: the focus moves into it (to
// `first`, else its first control), Tab and Shift+Tab stay inside it, Escape closes it,
// and on close the focus goes back to what had it before (the button that opened it).
// `onClose` is read through a ref, so a parent's new closure each render is fine.
// A layout effect, not an effect: it runs as the dialog enters the page, before the
// browser paints it, so an Escape pressed as soon as it shows is never lost (an effect
// runs a frame later, and a loaded machine's key came first).
export function useDialog(ref, onClose, first) {
  const close = useRef(onClose);
  close.current = onClose;
  useLayoutEffect(() => {
    const before = document.activeElement;
    const box = ref.current;
    const start = (first && first.current) || (box && box.querySelector(FOCUSABLE));
    if (start) start.focus();
    const key = (e) => {
      if (!ref.current) return;
      if (e.key === "Escape") {
        e.preventDefault();
        close.current();
        return;
      }
      if (e.key !== "Tab") return;
      const all = [...ref.current.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
      if (all.length === 0) { e.preventDefault(); return; }
      const i = all.indexOf(document.activeElement);
      if (e.shiftKey && (i <= 0)) { e.preventDefault(); all[all.length - 1].focus(); }
      else if (!e.shiftKey && (i === -1 || i === all.length - 1)) { e.preventDefault(); all[0].focus(); }
    };
    addEventListener("keydown", key);
    return () => {
      removeEventListener("keydown", key);
      if (before && before.isConnected && typeof before.focus === "function") before.focus();
    };
  }, []);
}

// A modal dialog (a form when onSubmit is given) with useDialog's keyboard handling;
// a click on the backdrop closes it too.
export function Modal({ labelledBy, onClose, onSubmit, wide, children }) {
  const box = useRef(null);
  useDialog(box, onClose);
  const Tag = onSubmit ? "form" : "div";
  return html`<div class="modal-backdrop" onClick=${(e) => e.target === e.currentTarget && onClose()}>
    <${Tag} ref=${box} class=${wide ? "modal wide" : "modal"} role="dialog" aria-modal="true" aria-labelledby=${labelledBy}
      onSubmit=${onSubmit}>${children}</${Tag}></div>`;
}

// A modal confirmation: resolve(true) on confirm.
export function Confirm({ title, body, confirmLabel = "Delete", onConfirm, onCancel, requireText }) {
  const [text, setText] = useState("");
  const first = useRef(null);
  const box = useRef(null);
  useDialog(box, onCancel, first);
  const ok = !requireText || text === requireText;
  return html`<div class="modal-backdrop" onClick=${(e) => e.target === e.currentTarget && onCancel()}>
    <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title" ref=${box}>
      <h2 id="confirm-title">${title}</h2>
      <p>${body}</p>
      ${requireText &&
      html`<label>Type <b>${requireText}</b> to confirm
        <input ref=${first} value=${text} onInput=${(e) => setText(e.target.value)} aria-label="confirmation" /></label>`}
      <div class="actions">
        <button type="button" ref=${requireText ? null : first} onClick=${onCancel}>Cancel</button>
        <button type="button" class="danger" disabled=${!ok} onClick=${onConfirm} data-testid="confirm">
          ${confirmLabel}
        </button>
      </div>
    </div>
  </div>`;
}

let toastSet = null;
export function toast(message, kind = "ok") {
  if (toastSet) toastSet({ message, kind, at: Date.now() });
}
export function Toasts() {
  const [t, setT] = useState(null);
  toastSet = setT;
  useEffect(() => {
    if (!t) return;
    const id = setTimeout(() => setT(null), 3000);
    return () => clearTimeout(id);
  }, [t]);
  return t ? html`<div class="toast ${t.kind}" role="status">${t.message}</div>` : null;
}

export function fmtDate(s) {
  return s ? s.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}
