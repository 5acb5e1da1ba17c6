// The request log (GET /api/logs): filters by status class, method and a filter
// expression, paging, and the counts per hour (GET /api/logs/stats) as bars.
import { useEffect, useState } from "preact/hooks";
import { html, pb, errorOf, ErrorBanner, fmtDate } from "../lib.js";

const PER_PAGE = 50;

export function Logs() {
  const [status, setStatus] = useState("");
  const [method, setMethod] = useState("");
  const [text, setText] = useState("");
  const [expr, setExpr] = useState("");
  const [page, setPage] = useState(1);
  const [list, setList] = useState(null);
  const [stats, setStats] = useState([]);
  const [err, setErr] = useState(null);
  const [filterErr, setFilterErr] = useState(null);
  const [open, setOpen] = useState(null);

  const filter = [
    status === "ok" ? "data.status < 400" : status === "4xx" ? "data.status >= 400 && data.status < 500" : status === "5xx" ? "data.status >= 500" : "",
    method ? `data.method = "${method}"` : "",
    expr ? `(${expr})` : "",
  ].filter(Boolean).join(" && ");

  async function load() {
    try {
      const [l, s] = await Promise.all([
        pb.logs.getList(page, PER_PAGE, { filter, sort: "-created" }),
        pb.logs.getStats({ filter }),
      ]);
      setList(l); setStats(s); setFilterErr(null); setErr(null);
    } catch (x) {
      const e = errorOf(x);
      if (expr && e.status === 400) setFilterErr(e.message); else setErr(e);
    }
  }
  useEffect(() => { load(); }, [status, method, expr, page]);
  const max = Math.max(1, ...stats.map((s) => s.total));
  return html`<section>
    <div class="page-head"><h1>Logs</h1><span class="grow"></span><button type="button" onClick=${load}>Refresh</button></div>
    <${ErrorBanner} err=${err} />
    <form class="filter" role="search" onSubmit=${(e) => { e.preventDefault(); setPage(1); setExpr(text.trim()); }}>
      <select aria-label="status" value=${status} onChange=${(e) => { setStatus(e.target.value); setPage(1); }}>
        <option value="">any status</option><option value="ok">below 400</option><option value="4xx">4xx</option><option value="5xx">5xx</option>
      </select>
      <select aria-label="method" value=${method} onChange=${(e) => { setMethod(e.target.value); setPage(1); }}>
        <option value="">any method</option>${["GET", "POST", "PATCH", "PUT", "DELETE"].map((m) => html`<option>${m}</option>`)}
      </select>
      <input class="grow mono" name="filter" aria-label="log filter" placeholder='e.g. data.url ~ "/api/collections" && data.execTime > 5'
        value=${text} onInput=${(e) => setText(e.target.value)} />
      <button type="submit">Filter</button>
    </form>
    ${filterErr && html`<div class="field-error" role="alert" data-error-for="filter">${filterErr}</div>`}
    <div class="bars" aria-label="requests per hour" role="img">
      ${stats.slice(-48).map((s) => html`<div class="bar" title=${`${s.date}: ${s.total}`} style=${`height:${(100 * s.total) / max}%`}></div>`)}
    </div>
    ${list === null ? html`<p class="muted">Loading…</p>` : html`<div class="table-wrap"><table class="grid logs">
      <thead><tr><th scope="col">Time</th><th scope="col">Status</th><th scope="col">Method</th><th scope="col">URL</th><th scope="col">ms</th><th scope="col">Auth</th></tr></thead>
      <tbody>${list.items.length === 0 ? html`<tr><td colspan="6" class="muted">No requests match.</td></tr>` : list.items.map((l) => html`
        <tr class=${l.level >= 8 ? "lvl-error" : l.level >= 4 ? "lvl-warn" : ""} tabIndex="0" aria-expanded=${open === l.id}
          onClick=${() => setOpen(open === l.id ? null : l.id)}
          onKeyDown=${(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); setOpen(open === l.id ? null : l.id); } }}>
          <td data-label="time">${fmtDate(l.created)}</td><td data-label="status">${l.data.status}</td><td data-label="method">${l.data.method}</td>
          <td data-label="url" class="mono">${l.data.url}</td><td data-label="ms">${l.data.execTime.toFixed(1)}</td><td data-label="auth">${l.data.auth}</td>
        </tr>${open === l.id && html`<tr><td colspan="6"><pre class="mono small">${JSON.stringify(l, null, 2)}</pre></td></tr>`}`)}
      </tbody></table></div>
      <nav class="pager" aria-label="pages">
        <button type="button" disabled=${page <= 1} onClick=${() => setPage(page - 1)}>Previous</button>
        <span>Page ${list.page} of ${Math.max(list.totalPages, 1)} · ${list.totalItems} requests</span>
        <button type="button" disabled=${page >= list.totalPages} onClick=${() => setPage(page + 1)}>Next</button>
      </nav>`}
  </section>`;
}
