// Backups (PocketBase's backups API, DIR/backups/): the archives with their size and
// time, create (an optional name), download through a short-lived file token, upload
// a zip made elsewhere, restore (typed confirmation: the server restarts) and delete.
import { useEffect, useRef, useState } from "preact/hooks";
import { html, pb, errorOf, ErrorBanner, Confirm, toast, fmtDate } from "../lib.js";

export function fmtSize(n) {
  if (n < 1024) return n + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + " " + u[i];
}

// After a restore the server shuts down and starts again: wait for /api/health to
// answer again (up to a minute) rather than show errors meanwhile.
async function waitForRestart() {
  await new Promise((r) => setTimeout(r, 1000));
  for (let i = 0; i < 60; i++) {
    try {
      const r = await fetch("/api/health", { cache: "no-store" });
      if (r.ok) return true;
    } catch (e) { /* still restarting */ }
    await new Promise((r) => setTimeout(r, 1000));
  }
  return false;
}

export function Backups() {
  const [list, setList] = useState(null);
  const [err, setErr] = useState(null);
  const [name, setName] = useState("");
  const [createErr, setCreateErr] = useState(null);
  const [busy, setBusy] = useState("");
  const [deleting, setDeleting] = useState(null);
  const [restoring, setRestoring] = useState(null);
  const fileRef = useRef(null);

  async function load() {
    try {
      setList(await pb.backups.getFullList());
      setErr(null);
    } catch (x) { setErr(errorOf(x)); }
  }
  useEffect(() => { load(); }, []);

  async function create(e) {
    e.preventDefault();
    setBusy("create"); setCreateErr(null);
    try {
      // An empty name lets the server pick pb_backup_<time>.zip.
      await pb.backups.create(name.trim());
      toast("Backup created");
      setName("");
      await load();
    } catch (x) { setCreateErr(errorOf(x)); } finally { setBusy(""); }
  }
  async function upload(e) {
    const file = e.target.files && e.target.files[0];
    e.target.value = "";
    if (!file) return;
    setBusy("upload"); setErr(null);
    try {
      const fd = new FormData();
      fd.append("file", file);
      await pb.backups.upload(fd);
      toast("Uploaded " + file.name);
      await load();
    } catch (x) { setErr(errorOf(x)); } finally { setBusy(""); }
  }
  async function download(key) {
    try {
      // The download URL needs a superuser's file token (valid 3 minutes), asked for
      // at the click so that it is always fresh.
      const token = await pb.files.getToken();
      const a = document.createElement("a");
      a.href = pb.backups.getDownloadURL(token, key);
      a.download = key;
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (x) { setErr(errorOf(x)); }
  }
  async function doDelete() {
    const key = deleting;
    setDeleting(null);
    try {
      await pb.backups.delete(key);
      toast("Deleted " + key);
      await load();
    } catch (x) { setErr(errorOf(x)); }
  }
  async function doRestore() {
    const key = restoring;
    setRestoring(null);
    setBusy("restore"); setErr(null);
    try {
      await pb.backups.restore(key);
      toast("Restored " + key + "; the server is restarting");
      if (!(await waitForRestart())) setErr({ message: "The server has not come back after the restore: look at its log." });
      else { toast("The server is back with " + key); await load(); }
    } catch (x) { setErr(errorOf(x)); } finally { setBusy(""); }
  }

  return html`<section>
    <div class="page-head">
      <h1>Backups</h1>
      <span class="grow"></span>
      <button type="button" onClick=${load}>Refresh</button>
      <button type="button" disabled=${!!busy} onClick=${() => fileRef.current && fileRef.current.click()}>
        ${busy === "upload" ? "Uploading…" : "Upload a zip"}</button>
      <input ref=${fileRef} type="file" accept=".zip,application/zip" hidden aria-label="backup file to upload" onChange=${upload} />
    </div>
    <p class="muted small">Whole-database archives kept in the data folder's <code>backups/</code>. The continuous
      backup and point-in-time restore are configured on the command line (see docs/backups.md).</p>
    <${ErrorBanner} err=${err} />
    <form class="filter" onSubmit=${create}>
      <input class="grow" name="backup-name" aria-label="backup name" placeholder="name (optional), e.g. before-upgrade.zip"
        value=${name} onInput=${(e) => setName(e.target.value)} />
      <button type="submit" class="primary" disabled=${!!busy}>${busy === "create" ? "Creating…" : "Create backup"}</button>
    </form>
    ${createErr && html`<div class="field-error" role="alert" data-error-for="name">${(createErr.fields && createErr.fields.name) || createErr.message}</div>`}
    ${busy === "restore" && html`<div class="banner" role="status">Restoring; the server restarts and comes back in a moment…</div>`}
    ${list === null ? html`<p class="muted">Loading…</p>` : html`<div class="table-wrap"><table class="grid backups">
      <thead><tr><th scope="col">Key</th><th scope="col">Size</th><th scope="col">Modified</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.length === 0 ? html`<tr><td colspan="4" class="muted">No backups yet.</td></tr>` : list.map((b) => html`
        <tr data-key=${b.key}>
          <td data-label="key" class="mono">${b.key}</td>
          <td data-label="size">${fmtSize(b.size)}</td>
          <td data-label="modified">${fmtDate(b.modified)}</td>
          <td class="actions-cell">
            <button type="button" class="small" onClick=${() => download(b.key)}>Download</button>
            <button type="button" class="small" disabled=${!!busy} onClick=${() => setRestoring(b.key)}>Restore</button>
            <button type="button" class="small danger" onClick=${() => setDeleting(b.key)}>Delete</button>
          </td></tr>`)}</tbody>
    </table></div>`}
    ${deleting && html`<${Confirm} title="Delete this backup?" body=${deleting + " is deleted for good."}
      onConfirm=${doDelete} onCancel=${() => setDeleting(null)} />`}
    ${restoring && html`<${Confirm} title="Restore this backup?" confirmLabel="Restore" requireText=${restoring}
      body=${"The database and its files are replaced by " + restoring + " and the server restarts: requests in flight finish, realtime clients reconnect. The current data is kept in the data folder's .pre-restore-<time>/ folder."}
      onConfirm=${doRestore} onCancel=${() => setRestoring(null)} />`}
  </section>`;
}
