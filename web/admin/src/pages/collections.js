// Collections: the list, and the editor (fields with their options, the five rules
// with the server's validation errors beside each, indexes), delete with confirmation.
import { useEffect, useState } from "preact/hooks";
import { html, pb, go, errorOf, FieldError, ErrorBanner, Confirm, toast } from "../lib.js";

export const FIELD_TYPES = ["text", "number", "bool", "email", "url", "editor", "date", "autodate", "select", "relation", "json"];
export const RULES = [
  ["listRule", "List"], ["viewRule", "View"], ["createRule", "Create"], ["updateRule", "Update"], ["deleteRule", "Delete"],
];

export function useCollections() {
  const [list, setList] = useState(null);
  const [err, setErr] = useState(null);
  const load = () => pb.collections.getFullList({ sort: "name" }).then(setList, (e) => setErr(errorOf(e)));
  useEffect(() => { load(); }, []);
  return [list, err, load];
}

export function Collections() {
  const [list, err] = useCollections();
  return html`<section>
    <div class="page-head">
      <h1>Collections</h1>
      <span class="grow"></span>
      <a class="button primary" href="#/collections/new/edit">New collection</a>
    </div>
    <${ErrorBanner} err=${err} />
    ${list === null ? html`<p class="muted">Loading…</p>` : html`<div class="table-wrap"><table class="grid">
      <thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Fields</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.map((c) => html`<tr data-collection=${c.name}>
        <td><a href=${"#/records/" + encodeURIComponent(c.name)}>${c.name}</a>${c.system ? html` <span class="tag">system</span>` : null}</td>
        <td>${c.type}</td>
        <td>${c.fields.filter((f) => !f.system).length}</td>
        <td class="actions-cell">
          <a href=${"#/records/" + encodeURIComponent(c.name)}>Records</a>
          ${" "}<a href=${"#/collections/" + encodeURIComponent(c.name) + "/edit"}>Edit</a>
        </td></tr>`)}
      </tbody></table></div>`}
  </section>`;
}

const blankField = () => ({ name: "", type: "text", required: false, hidden: false, _new: true });

function FieldOptions({ f, set, collections }) {
  const num = (k) => html`<label class="inline">${k} <input type="number" value=${f[k] ?? ""}
    onInput=${(e) => set({ [k]: e.target.value === "" ? null : Number(e.target.value) })} /></label>`;
  switch (f.type) {
    case "text":
      return html`${num("min")}${num("max")}<label class="inline">pattern <input value=${f.pattern || ""}
        onInput=${(e) => set({ pattern: e.target.value })} /></label>`;
    case "number":
      return html`${num("min")}${num("max")}<label class="inline"><input type="checkbox" checked=${!!f.onlyInt}
        onChange=${(e) => set({ onlyInt: e.target.checked })} /> integers only</label>`;
    case "select":
      return html`<label class="inline grow">values <input placeholder="a, b, c" value=${(f.values || []).join(", ")}
        aria-label=${"values of " + f.name}
        onInput=${(e) => set({ values: e.target.value.split(",").map((s) => s.trim()).filter(Boolean) })} /></label>${num("maxSelect")}`;
    case "relation":
      return html`<label class="inline">collection <select value=${f.collectionId || ""}
        onChange=${(e) => set({ collectionId: e.target.value })}>
        <option value="">choose…</option>
        ${(collections || []).map((c) => html`<option value=${c.id}>${c.name}</option>`)}
      </select></label>${num("maxSelect")}<label class="inline"><input type="checkbox" checked=${!!f.cascadeDelete}
        onChange=${(e) => set({ cascadeDelete: e.target.checked })} /> cascade delete</label>`;
    case "autodate":
      return html`<label class="inline"><input type="checkbox" checked=${f.onCreate !== false}
        onChange=${(e) => set({ onCreate: e.target.checked })} /> on create</label>
        <label class="inline"><input type="checkbox" checked=${!!f.onUpdate}
        onChange=${(e) => set({ onUpdate: e.target.checked })} /> on update</label>`;
    case "json":
      return num("maxSize");
    case "date":
      return html`<label class="inline">min <input value=${f.min || ""} placeholder="2024-01-01 00:00:00.000Z"
        onInput=${(e) => set({ min: e.target.value })} /></label>`;
    default:
      return null;
  }
}

// The server names a bad index "indexes.N" (or the whole list "indexes"): each shown
// under the box, with the line it is about.
function indexErrors(err) {
  if (!err) return [];
  return Object.entries(err.fields).filter(([k]) => /^indexes(\.\d+)?$/.test(k))
    .map(([k, v]) => [k, k === "indexes" ? v : `Line ${Number(k.split(".")[1]) + 1}: ${v}`]);
}

export function CollectionEdit({ params }) {
  const isNew = params[0] === "new";
  const [c, setC] = useState(isNew ? { name: "", type: "base", fields: [blankField()], indexes: [],
    listRule: null, viewRule: null, createRule: null, updateRule: null, deleteRule: null } : null);
  const [all, setAll] = useState([]);
  const [err, setErr] = useState(null);
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    pb.collections.getFullList({ sort: "name" }).then(setAll, () => {});
    if (!isNew)
      pb.collections.getOne(decodeURIComponent(params[0])).then((x) => setC(x), (e) => setErr(errorOf(e)));
  }, [params[0]]);
  if (c === null) return html`<section><${ErrorBanner} err=${err} /><p class="muted">Loading…</p></section>`;
  const set = (patch) => setC({ ...c, ...patch });
  const setField = (i, patch) => set({ fields: c.fields.map((f, j) => (j === i ? { ...f, ...patch } : f)) });
  const fieldErr = (i) => {
    // Server errors on fields come as "fields.N.name" or "fields" keys.
    const out = {};
    if (!err) return out;
    for (const [k, v] of Object.entries(err.fields)) {
      const m = k.match(/^fields\.(\d+)\.?(.*)$/);
      if (m && Number(m[1]) === i) out[m[2] || "name"] = v;
    }
    return { fields: out };
  };
  async function save(e) {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    const body = { ...c, fields: c.fields.map(({ _new, ...f }) => f) };
    for (const f of body.fields) if (!f.id) delete f.id;
    try {
      const saved = isNew ? await pb.collections.create(body) : await pb.collections.update(c.id, body);
      toast(`Saved ${saved.name}`);
      go("/collections/" + encodeURIComponent(saved.name) + "/edit");
      setC(saved);
    } catch (x) {
      setErr(errorOf(x));
    } finally {
      setBusy(false);
    }
  }
  async function del() {
    try {
      await pb.collections.delete(c.id);
      toast(`Deleted ${c.name}`);
      go("/collections");
    } catch (x) {
      setErr(errorOf(x));
      setConfirm(false);
    }
  }
  return html`<section>
    <div class="page-head">
      <h1>${isNew ? "New collection" : c.name}</h1>
      <span class="grow"></span>
      ${!isNew && html`<a class="button" href=${"#/records/" + encodeURIComponent(c.name)}>Records</a>`}
      ${!isNew && !c.system && html`<button type="button" class="danger" onClick=${() => setConfirm(true)}>Delete</button>`}
    </div>
    <${ErrorBanner} err=${err} />
    <form onSubmit=${save} class="editor">
      <div class="row">
        <label>Name <input name="name" required value=${c.name} disabled=${c.system}
          onInput=${(e) => set({ name: e.target.value })} /><${FieldError} err=${err} name="name" /></label>
        <label>Type <select name="type" value=${c.type} disabled=${!isNew}
          onChange=${(e) => set({ type: e.target.value })}>
          <option value="base">base</option><option value="auth">auth</option></select></label>
      </div>
      <fieldset>
        <legend>Fields</legend>
        ${c.fields.map((f, i) => f.system ? html`<div class="field-row system"><code>${f.name}</code> <span class="muted">${f.type}, system</span></div>` : html`
          <div class="field-row" data-field=${i}>
            <input aria-label=${"field " + (i + 1) + " name"} placeholder="name" value=${f.name} required
              onInput=${(e) => setField(i, { name: e.target.value })} />
            <select aria-label=${"field " + (i + 1) + " type"} value=${f.type} disabled=${!f._new}
              onChange=${(e) => setField(i, { type: e.target.value })}>
              ${FIELD_TYPES.map((t) => html`<option value=${t}>${t}</option>`)}
            </select>
            <label class="inline"><input type="checkbox" checked=${!!f.required}
              onChange=${(e) => setField(i, { required: e.target.checked })} /> required</label>
            <label class="inline"><input type="checkbox" checked=${!!f.hidden}
              onChange=${(e) => setField(i, { hidden: e.target.checked })} /> hidden</label>
            <${FieldOptions} f=${f} set=${(p) => setField(i, p)} collections=${all} />
            <button type="button" aria-label=${"remove field " + (f.name || i + 1)}
              onClick=${() => set({ fields: c.fields.filter((_, j) => j !== i) })}>✕</button>
            ${Object.entries(fieldErr(i).fields || {}).map(([k, v]) => html`<div class="field-error" role="alert">${k}: ${v}</div>`)}
          </div>`)}
        <${FieldError} err=${err} name="fields" />
        <button type="button" onClick=${() => set({ fields: [...c.fields, blankField()] })}>Add field</button>
      </fieldset>
      <fieldset>
        <legend>Rules</legend>
        <p class="muted small">Locked: superusers only. Empty: everyone. Otherwise a filter expression, e.g.
          <code>@request.auth.id != "" && owner = @request.auth.id</code>.</p>
        ${[...RULES, ...(c.type === "auth" ? [["authRule", "Auth"], ["manageRule", "Manage"]] : [])].map(([k, label]) => html`
          <div class="rule-row">
            <label for=${"rule-" + k}>${label}</label>
            <label class="inline"><input type="checkbox" checked=${c[k] === null || c[k] === undefined}
              aria-label=${label + " rule locked"}
              onChange=${(e) => set({ [k]: e.target.checked ? null : "" })} /> locked</label>
            <input id=${"rule-" + k} name=${k} class="grow mono" disabled=${c[k] === null || c[k] === undefined}
              value=${c[k] ?? ""} placeholder=${c[k] === null || c[k] === undefined ? "superusers only" : "everyone"}
              onInput=${(e) => set({ [k]: e.target.value })} />
            <${FieldError} err=${err} name=${k} />
          </div>`)}
      </fieldset>
      <fieldset>
        <legend>Indexes</legend>
        <textarea name="indexes" class="mono" rows="3" placeholder="CREATE INDEX idx_title ON tasks (title)"
          aria-label="indexes, one per line"
          value=${(c.indexes || []).join("\n")}
          onInput=${(e) => set({ indexes: e.target.value.split("\n").map((s) => s.trim()).filter(Boolean) })}></textarea>
        ${indexErrors(err).map(([k, m]) => html`<div class="field-error" role="alert" data-error-for="indexes" data-error-key=${k}>${m}</div>`)}
      </fieldset>
      <div class="actions"><button type="submit" class="primary" disabled=${busy}>${isNew ? "Create" : "Save changes"}</button></div>
    </form>
    ${confirm && html`<${Confirm} title=${"Delete " + c.name + "?"} requireText=${c.name}
      body="The collection and all its records are deleted. This cannot be undone."
      onConfirm=${del} onCancel=${() => setConfirm(false)} />`}
  </section>`;
}
