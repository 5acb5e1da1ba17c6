// Crons (GET /api/crons, POST /api/crons/{id}): the scheduled jobs with their
// expressions, and "Run now" for each, whose result shows on its row.
import { useEffect, useState } from "preact/hooks";
import { html, pb, errorOf, ErrorBanner } from "../lib.js";

export function Crons() {
  const [list, setList] = useState(null);
  const [err, setErr] = useState(null);
  const [result, setResult] = useState({}); // id -> { ok, message, at }
  const [running, setRunning] = useState("");

  async function load() {
    try { setList(await pb.crons.getFullList()); setErr(null); } catch (x) { setErr(errorOf(x)); }
  }
  useEffect(() => { load(); }, []);

  async function run(id) {
    setRunning(id);
    try {
      await pb.crons.run(id);
      setResult((r) => ({ ...r, [id]: { ok: true, message: "started", at: new Date() } }));
    } catch (x) {
      setResult((r) => ({ ...r, [id]: { ok: false, message: errorOf(x).message, at: new Date() } }));
    } finally { setRunning(""); }
  }

  return html`<section>
    <div class="page-head"><h1>Crons</h1><span class="grow"></span><button type="button" onClick=${load}>Refresh</button></div>
    <p class="muted small">A run now is queued as a job like a scheduled tick (see docs/jobs.md; its outcome is in the jobs' log).</p>
    <${ErrorBanner} err=${err} />
    ${list === null ? html`<p class="muted">Loading…</p>` : html`<div class="table-wrap"><table class="grid crons">
      <thead><tr><th scope="col">Id</th><th scope="col">Expression</th><th scope="col">Last run from here</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.length === 0 ? html`<tr><td colspan="4" class="muted">No crons registered.</td></tr>` : list.map((c) => {
        const r = result[c.id];
        return html`<tr data-cron=${c.id}>
          <td data-label="id" class="mono">${c.id}</td>
          <td data-label="expression" class="mono">${c.expression}</td>
          <td data-label="result" class=${r ? (r.ok ? "ok" : "bad") : "muted"} role="status">
            ${r ? `${r.ok ? "✓" : "✗"} ${r.message} at ${r.at.toLocaleTimeString()}` : "–"}</td>
          <td class="actions-cell"><button type="button" class="small" disabled=${running === c.id} onClick=${() => run(c.id)}>
            ${running === c.id ? "Running…" : "Run now"}</button></td></tr>`;
      })}</tbody></table></div>`}
  </section>`;
}
