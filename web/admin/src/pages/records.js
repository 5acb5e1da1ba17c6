// Records of one collection: a table with paging, sorting by column and the filter
// language (its errors shown under the box), forms per field type, delete, and live
// updates over realtime while the page is open. Auth collections add the verified
// state, impersonation (a short-lived token) and revoking a user's tokens. File
// fields: the current files as links (thumbnails for images, a file token for
// protected ones), uploads sent as FormData, removal with the "field-" modifier.
import { useEffect, useRef, useState } from "preact/hooks";
import { html, pb, errorOf, FieldError, ErrorBanner, Confirm, Modal, useDialog, toast, fmtDate } from "../lib.js";

const PER_PAGE = 20;

function toLocalInput(v) {
  // "2024-05-01 10:00:00.000Z" -> "2024-05-01T10:00" in local time for datetime-local.
  if (!v) return "";
  const d = new Date(v.replace(" ", "T"));
  if (isNaN(d)) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
function fromLocalInput(v) {
  return v ? new Date(v).toISOString().replace("T", " ") : "";
}

function cell(f, v) {
  if (v === null || v === undefined || v === "") return html`<span class="muted">–</span>`;
  if (f && f.type === "bool") return v ? "true" : "false";
  if (f && f.type === "json") return html`<code>${JSON.stringify(v).slice(0, 60)}</code>`;
  if (f && f.type === "geoPoint" && v) return `${v.lon}, ${v.lat}`;
  if (Array.isArray(v)) return v.join(", ");
  if (f && (f.type === "date" || f.type === "autodate")) return fmtDate(v);
  const s = String(v);
  return s.length > 80 ? s.slice(0, 80) + "…" : s;
}

// Searches the related collection and picks one or several ids.
function RelationPicker({ id, field, value, onChange, collections }) {
  const target = collections.find((c) => c.id === field.collectionId);
  const multi = (field.maxSelect || 1) > 1;
  const ids = Array.isArray(value) ? value : value ? [value] : [];
  const [q, setQ] = useState("");
  const [found, setFound] = useState([]);
  // Shown: the presentable field, else the e-mail, else the first text field. Searched:
  // the id and the first few visible text and e-mail fields.
  const fields = target ? target.fields.filter((f) => !f.hidden && (f.type === "text" || f.type === "email") && f.name !== "id") : [];
  const label = target && (target.fields.find((f) => f.presentable) || fields.find((f) => f.type === "email") || fields[0]);
  useEffect(() => {
    if (!target) return;
    const t = setTimeout(() => {
      const esc = q.replace(/["\\]/g, "");
      const filter = esc ? ["id", ...fields.slice(0, 3).map((f) => f.name)].map((n) => `${n} ~ "${esc}"`).join(" || ") : "";
      pb.collection(target.name).getList(1, 8, { filter, skipTotal: true }).then((r) => setFound(r.items), () => setFound([]));
    }, 200);
    return () => clearTimeout(t);
  }, [q, target && target.id]);
  if (!target) return html`<span class="muted">the related collection is gone</span>`;
  const pick = (id) => onChange(multi ? [...ids.filter((x) => x !== id), id] : id);
  const drop = (id) => onChange(multi ? ids.filter((x) => x !== id) : "");
  return html`<div class="relation">
    <div class="chips">${ids.map((id) => html`<span class="chip">${id}
      <button type="button" aria-label=${"remove " + id} onClick=${() => drop(id)}>✕</button></span>`)}</div>
    <input type="search" id=${id} placeholder=${"search " + target.name} value=${q} aria-label=${"search " + field.name}
      onInput=${(e) => setQ(e.target.value)} />
    <ul class="picker" role="listbox" aria-label=${field.name + " choices"}>
      ${found.map((r) => html`<li><button type="button" role="option" onClick=${() => pick(r.id)}>
        ${label ? r[label.name] : r.id} <span class="muted small">${r.id}</span></button></li>`)}
    </ul>
  </div>`;
}

function JsonEditor({ value, onChange, onBad, name, id }) {
  const [text, setText] = useState(value === undefined ? "" : JSON.stringify(value, null, 2));
  const [bad, setBadState] = useState(null);
  const setBad = (m) => { setBadState(m); if (onBad) onBad(m); };
  return html`<div><textarea class="mono" rows="4" id=${id} name=${name} value=${text} aria-invalid=${bad ? "true" : null}
    aria-describedby=${bad ? id + "-error" : null} onInput=${(e) => {
    setText(e.target.value);
    if (e.target.value.trim() === "") { setBad(null); onChange(null); return; }
    try { onChange(JSON.parse(e.target.value)); setBad(null); } catch (x) { setBad(x.message); }
  }}></textarea>${bad && html`<div class="field-error" role="alert" id=${id + "-error"} data-error-for=${name + "-json"}>Not JSON yet: ${bad}</div>`}</div>`;
}

const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
const namesOf = (v) => (Array.isArray(v) ? v : v ? [v] : []);

// A file field in the record form. Nothing is sent until the form is saved: the
// chosen files and the names marked for removal are kept in `st` ({ files, removed }).
function FileInput({ f, record, st, setSt, token }) {
  const multi = (f.maxSelect || 1) > 1;
  const current = record ? namesOf(record[f.name]) : [];
  const opts = (extra) => (f.protected ? { ...extra, token } : extra);
  const ready = !f.protected || token;
  const toggle = (n) => setSt({ ...st, removed: st.removed.includes(n) ? st.removed.filter((x) => x !== n) : [...st.removed, n] });
  return html`<div class="files">
    ${current.length > 0 && html`<ul class="file-list" aria-label=${"current files of " + f.name}>
      ${current.map((n) => {
        const gone = st.removed.includes(n);
        return html`<li class=${gone ? "removed" : ""} data-file=${n}>
          ${ready && IMAGE.test(n) && !gone ? html`<img class="thumb" alt="" width="40" height="40" src=${pb.files.getURL(record, n, opts({ thumb: "100x100" }))} />` : null}
          ${ready ? html`<a href=${pb.files.getURL(record, n, opts({}))} target="_blank" rel="noopener">${n}</a>` : html`<span>${n}</span>`}
          ${f.protected && html`<span class="tag">protected</span>`}
          <button type="button" class="small" aria-label=${(gone ? "keep " : "remove ") + n} onClick=${() => toggle(n)}>${gone ? "Keep" : "Remove"}</button>
        </li>`;
      })}</ul>`}
    ${st.files.length > 0 && html`<ul class="file-list new" aria-label=${"new files of " + f.name}>
      ${st.files.map((file, i) => html`<li><span>${file.name}</span> <span class="muted small">new</span>
        <button type="button" class="small" aria-label=${"drop " + file.name} onClick=${() => setSt({ ...st, files: st.files.filter((_, j) => j !== i) })}>✕</button></li>`)}</ul>`}
    <input type="file" id=${"f-" + f.name} name=${f.name} multiple=${multi} aria-label=${"upload " + f.name}
      accept=${(f.mimeTypes || []).join(",") || null}
      onChange=${(e) => {
        const picked = [...e.target.files];
        e.target.value = "";
        if (picked.length) setSt({ ...st, files: multi ? [...st.files, ...picked] : picked.slice(0, 1) });
      }} />
    ${!multi && current.length > 0 && st.files.length > 0 && html`<div class="muted small">The new file replaces ${current[0]}.</div>`}
  </div>`;
}

function Input({ f, value, set, collections, isNew, onBad }) {
  switch (f.type) {
    case "bool":
      return html`<input type="checkbox" id=${"f-" + f.name} name=${f.name} checked=${!!value} onChange=${(e) => set(e.target.checked)} />`;
    case "number":
      return html`<input type="number" step="any" id=${"f-" + f.name} name=${f.name} value=${value ?? ""}
        onInput=${(e) => set(e.target.value === "" ? null : Number(e.target.value))} />`;
    case "date":
      return html`<input type="datetime-local" id=${"f-" + f.name} name=${f.name} value=${toLocalInput(value)}
        onInput=${(e) => set(fromLocalInput(e.target.value))} />`;
    case "select": {
      if ((f.maxSelect || 1) > 1) {
        const cur = Array.isArray(value) ? value : [];
        return html`<select multiple id=${"f-" + f.name} name=${f.name} onChange=${(e) => set([...e.target.selectedOptions].map((o) => o.value))}>
          ${(f.values || []).map((v) => html`<option value=${v} selected=${cur.includes(v)}>${v}</option>`)}</select>`;
      }
      return html`<select id=${"f-" + f.name} name=${f.name} value=${value || ""} onChange=${(e) => set(e.target.value)}>
        <option value="">–</option>${(f.values || []).map((v) => html`<option value=${v}>${v}</option>`)}</select>`;
    }
    case "relation":
      return html`<${RelationPicker} id=${"f-" + f.name} field=${f} value=${value} onChange=${set} collections=${collections} />`;
    case "json":
      return html`<${JsonEditor} id=${"f-" + f.name} name=${f.name} value=${value} onChange=${set} onBad=${onBad} />`;
    case "geoPoint": {
      // Two numbers, as PocketBase's dashboard asks for them; empty reads as 0.
      const p = value || { lon: 0, lat: 0 };
      const num = (k) => (e) => set({ ...p, [k]: e.target.value === "" ? 0 : Number(e.target.value) });
      return html`<span class="geo"><input type="number" step="any" min="-180" max="180" name=${f.name + ".lon"}
        aria-label=${f.name + " longitude"} placeholder="lon" value=${p.lon} onInput=${num("lon")} />
        <input type="number" step="any" min="-90" max="90" name=${f.name + ".lat"}
        aria-label=${f.name + " latitude"} placeholder="lat" value=${p.lat} onInput=${num("lat")} /></span>`;
    }
    case "editor":
      return html`<textarea id=${"f-" + f.name} name=${f.name} rows="4" value=${value || ""} onInput=${(e) => set(e.target.value)}></textarea>`;
    case "password":
      return html`<input type="password" id=${"f-" + f.name} name=${f.name} autocomplete="new-password" placeholder=${isNew ? "" : "unchanged"}
        value=${value || ""} onInput=${(e) => set(e.target.value)} />`;
    case "email":
      return html`<input type="email" id=${"f-" + f.name} name=${f.name} value=${value || ""} onInput=${(e) => set(e.target.value)} />`;
    case "url":
      return html`<input type="url" id=${"f-" + f.name} name=${f.name} value=${value || ""} onInput=${(e) => set(e.target.value)} />`;
    default:
      return html`<input id=${"f-" + f.name} name=${f.name} value=${value ?? ""} onInput=${(e) => set(e.target.value)} />`;
  }
}

function RecordForm({ coll, record, collections, onClose, onSaved }) {
  const isNew = !record;
  const editable = coll.fields.filter((f) => !(f.system && !["email", "emailVisibility", "verified", "password"].includes(f.name)) && f.type !== "autodate");
  const fileFields = editable.filter((f) => f.type === "file");
  const [data, setData] = useState(() => {
    const d = {};
    for (const f of editable) if (record && f.type !== "password" && f.type !== "file") d[f.name] = record[f.name];
    return d;
  });
  const [files, setFiles] = useState(() => Object.fromEntries(fileFields.map((f) => [f.name, { files: [], removed: [] }])));
  // Protected files are shown through a file token (a few minutes; the form is short-lived).
  const [token, setToken] = useState("");
  useEffect(() => {
    if (record && fileFields.some((f) => f.protected)) pb.files.getToken().then(setToken, (x) => setErr(errorOf(x)));
  }, []);
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  // JSON fields whose text does not parse: the form is not sent while there is one
  // (the last good value would be sent instead of what the box shows).
  const [badJson, setBadJson] = useState({});
  async function submit(e) {
    e.preventDefault();
    const bad = Object.keys(badJson).filter((k) => badJson[k]);
    if (bad.length) {
      setErr({ message: "Not saved: " + bad.join(", ") + " is not valid JSON.", fields: {} });
      return;
    }
    setBusy(true);
    setErr(null);
    const body = { ...data };
    if (coll.type === "auth") {
      if (body.password) body.passwordConfirm = body.password;
      else delete body.password;
    }
    // Removals go as "field-": [names]; new files as multipart parts beside the rest
    // of the body (in @jsonPayload, so that types survive). On update, files of a
    // multi-file field are appended ("field+"); a single file replaces the old one.
    let payload = body;
    const parts = [];
    for (const f of fileFields) {
      const st = files[f.name];
      if (st.removed.length) body[f.name + "-"] = st.removed;
      const key = !isNew && (f.maxSelect || 1) > 1 ? f.name + "+" : f.name;
      for (const file of st.files) parts.push([key, file]);
    }
    if (parts.length) {
      payload = new FormData();
      payload.append("@jsonPayload", JSON.stringify(body));
      for (const [k, file] of parts) payload.append(k, file, file.name);
    }
    try {
      const saved = isNew ? await pb.collection(coll.name).create(payload) : await pb.collection(coll.name).update(record.id, payload);
      toast(isNew ? "Record created" : "Record saved");
      onSaved(saved);
    } catch (x) {
      setErr(errorOf(x));
    } finally {
      setBusy(false);
    }
  }
  const formRef = useRef(null);
  useDialog(formRef, onClose);
  return html`<div class="modal-backdrop" onClick=${(e) => e.target === e.currentTarget && onClose()}>
    <form ref=${formRef} class="modal wide" role="dialog" aria-modal="true" aria-labelledby="rf-title" onSubmit=${submit}>
      <h2 id="rf-title">${isNew ? "New record in " + coll.name : "Edit " + record.id}</h2>
      <${ErrorBanner} err=${err} />
      ${editable.map((f) => html`<div class="form-row">
        <label for=${"f-" + f.name}>${f.name}${f.required ? " *" : ""} <span class="muted small">${f.type}</span></label>
        <div>
          ${f.type === "file" ? html`<${FileInput} f=${f} record=${record} st=${files[f.name]} token=${token}
            setSt=${(v) => setFiles((o) => ({ ...o, [f.name]: v }))} />` : html`<${Input} f=${f} value=${data[f.name]} isNew=${isNew} collections=${collections}
            onBad=${(m) => setBadJson((b) => ({ ...b, [f.name]: m }))}
            set=${(v) => setData((d) => ({ ...d, [f.name]: v }))} />`}
          <${FieldError} err=${err} name=${f.name} />
        </div></div>`)}
      <div class="actions">
        <button type="button" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary" disabled=${busy}>${isNew ? "Create" : "Save"}</button>
      </div>
    </form>
  </div>`;
}

function AuthActions({ coll, rec, onChanged }) {
  const [token, setToken] = useState(null);
  async function impersonate() {
    try {
      const r = await pb.send(`/api/collections/${encodeURIComponent(coll.name)}/impersonate/${encodeURIComponent(rec.id)}`,
        { method: "POST", body: { duration: 900 } });
      setToken(r.token);
    } catch (x) { toast(errorOf(x).message, "error"); }
  }
  async function revoke() {
    try {
      await pb.send(`/api/basalt/collections/${encodeURIComponent(coll.name)}/revoke-tokens/${encodeURIComponent(rec.id)}`, { method: "POST" });
      toast("Every token of " + (rec.email || rec.id) + " is revoked");
    } catch (x) { toast(errorOf(x).message, "error"); }
  }
  async function toggleVerified() {
    try {
      await pb.collection(coll.name).update(rec.id, { verified: !rec.verified });
      onChanged();
    } catch (x) { toast(errorOf(x).message, "error"); }
  }
  return html`<span class="auth-actions">
    <button type="button" class="small" onClick=${toggleVerified}>${rec.verified ? "Unverify" : "Verify"}</button>
    ${coll.name !== "_superusers" && html`<button type="button" class="small" onClick=${impersonate}>Impersonate</button>`}
    <button type="button" class="small" onClick=${revoke}>Revoke tokens</button>
    ${token && html`<${Modal} labelledBy="imp-title" onClose=${() => setToken(null)}>
      <h2 id="imp-title">Token for ${rec.email || rec.id}</h2>
      <p class="muted small">Valid for 15 minutes. Send it as the Authorization header to act as this user.</p>
      <textarea class="mono" readonly rows="4" aria-label="token">${token}</textarea>
      <div class="actions"><button type="button" onClick=${() => navigator.clipboard && navigator.clipboard.writeText(token).then(() => toast("Copied"), () => {})}>Copy</button>
      <button type="button" class="primary" onClick=${() => setToken(null)}>Close</button></div></${Modal}>`}
  </span>`;
}

export function Records({ params }) {
  const name = decodeURIComponent(params[0]);
  const [coll, setColl] = useState(null);
  const [collections, setCollections] = useState([]);
  const [page, setPage] = useState(1);
  const [sort, setSort] = useState("-@rowid");
  const [filter, setFilter] = useState("");
  const [applied, setApplied] = useState("");
  const [list, setList] = useState(null);
  const [err, setErr] = useState(null);
  const [filterErr, setFilterErr] = useState(null);
  const [editing, setEditing] = useState(undefined); // undefined: closed, null: new, record: edit
  const [deleting, setDeleting] = useState(null);
  const [live, setLive] = useState(false);
  const reloadRef = useRef(() => {});

  useEffect(() => {
    setColl(null);
    pb.collections.getFullList({ sort: "name" }).then((all) => {
      setCollections(all);
      const c = all.find((x) => x.name === name);
      if (c) setColl(c);
      else setErr({ message: `There is no collection "${name}".` });
    }, (e) => setErr(errorOf(e)));
  }, [name]);

  async function load() {
    if (!coll) return;
    try {
      const r = await pb.collection(coll.name).getList(page, PER_PAGE, { sort, filter: applied });
      setList(r);
      setFilterErr(null);
    } catch (x) {
      const e = errorOf(x);
      if (applied && e.status === 400) setFilterErr(e.message);
      else setErr(e);
    }
  }
  reloadRef.current = load;
  useEffect(() => { load(); }, [coll, page, sort, applied]);

  // Live: any change in the collection reloads the page shown.
  useEffect(() => {
    if (!coll) return;
    let unsub = null, gone = false;
    // After a reconnection (the server restarted, the network dropped) the SDK
    // subscribes again by itself, but changes made while it was away send no event:
    // each PB_CONNECT after the subscription reloads the page shown. The SDK has one
    // onDisconnect hook; this page is the only one that sets it.
    let unconnect = null;
    pb.collection(coll.name).subscribe("*", () => reloadRef.current()).then(async (u) => {
      if (gone) return u();
      unsub = u;
      setLive(true);
      const c = await pb.realtime.subscribe("PB_CONNECT", () => { setLive(true); reloadRef.current(); });
      if (gone) c(); else unconnect = c;
      pb.realtime.onDisconnect = () => setLive(false);
    }, () => setLive(false));
    return () => {
      gone = true;
      setLive(false);
      pb.realtime.onDisconnect = undefined;
      if (unsub) unsub();
      if (unconnect) unconnect();
    };
  }, [coll && coll.id]);

  if (!coll) return html`<section><${ErrorBanner} err=${err} /><p class="muted">Loading…</p></section>`;
  const shown = coll.fields.filter((f) => !f.hidden && f.type !== "password");
  const sortBy = (n) => { setSort(sort === n ? "-" + n : n); setPage(1); };
  const arrow = (n) => (sort === n ? " ▲" : sort === "-" + n ? " ▼" : "");
  async function doDelete() {
    try {
      await pb.collection(coll.name).delete(deleting.id);
      toast("Record deleted");
      setDeleting(null);
      load();
    } catch (x) { setErr(errorOf(x)); setDeleting(null); }
  }
  return html`<section>
    <div class="page-head">
      <h1>${coll.name}</h1>
      <span class="tag">${coll.type}</span>
      <span class=${"live " + (live ? "on" : "")} title="realtime updates">${live ? "● live" : "○ not live"}</span>
      <span class="grow"></span>
      <a class="button" href=${"#/collections/" + encodeURIComponent(coll.name) + "/edit"}>Edit collection</a>
      <button type="button" class="primary" onClick=${() => setEditing(null)}>New record</button>
    </div>
    <${ErrorBanner} err=${err} />
    <form class="filter" role="search" onSubmit=${(e) => { e.preventDefault(); setPage(1); setApplied(filter.trim()); }}>
      <input class="grow mono" name="filter" aria-label="filter" aria-invalid=${!!filterErr} aria-describedby="filter-error"
        placeholder='filter, e.g. title ~ "milk" && created > "2024-01-01"' value=${filter} onInput=${(e) => setFilter(e.target.value)} />
      <button type="submit">Filter</button>
      ${applied && html`<button type="button" onClick=${() => { setFilter(""); setApplied(""); }}>Clear</button>`}
    </form>
    ${filterErr && html`<div class="field-error" id="filter-error" role="alert" data-error-for="filter">${filterErr}</div>`}
    ${list === null ? html`<p class="muted">Loading…</p>` : html`
      <div class="table-wrap"><table class="grid records">
        <thead><tr>${shown.map((f) => html`<th scope="col" aria-sort=${sort === f.name ? "ascending" : sort === "-" + f.name ? "descending" : "none"}>
          <button type="button" class="th" onClick=${() => sortBy(f.name)}>${f.name}${arrow(f.name)}</button></th>`)}
          <th scope="col">Actions</th></tr></thead>
        <tbody>${list.items.length === 0 ? html`<tr><td colspan=${shown.length + 1} class="muted">No records${applied ? " match the filter" : ""}.</td></tr>` :
          list.items.map((r) => html`<tr data-id=${r.id}>
          ${shown.map((f) => html`<td data-label=${f.name}>${cell(f, r[f.name])}</td>`)}
          <td class="actions-cell">
            <button type="button" class="small" onClick=${() => setEditing(r)}>Edit</button>
            <button type="button" class="small danger" onClick=${() => setDeleting(r)}>Delete</button>
            ${coll.type === "auth" && html`<${AuthActions} coll=${coll} rec=${r} onChanged=${load} />`}
          </td></tr>`)}</tbody>
      </table></div>
      <nav class="pager" aria-label="pages">
        <button type="button" disabled=${page <= 1} onClick=${() => setPage(page - 1)}>Previous</button>
        ${list.totalItems < 0
          ? html`<span title="Counting them would take longer than the server's count budget">Page ${list.page} · too many records to count</span>`
          : html`<span>Page ${list.page} of ${Math.max(list.totalPages, 1)} · ${list.totalItems} records</span>`}
        <button type="button" disabled=${list.totalItems < 0 ? list.items.length < list.perPage : page >= list.totalPages}
          onClick=${() => setPage(page + 1)}>Next</button>
      </nav>`}
    ${editing !== undefined && html`<${RecordForm} coll=${coll} record=${editing} collections=${collections}
      onClose=${() => setEditing(undefined)} onSaved=${() => { setEditing(undefined); load(); }} />`}
    ${deleting && html`<${Confirm} title="Delete this record?" body=${"Record " + deleting.id + " is deleted for good."}
      onConfirm=${doDelete} onCancel=${() => setDeleting(null)} />`}
  </section>`;
}
