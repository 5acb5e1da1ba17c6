// Live metrics: GET /metrics polled every two seconds, parsed in the browser, drawn
// with uPlot: request rate, 5xx errors, p50/p95/p99 latency, realtime connections,
// cache hit rate and rate-limit refusals, over the last ten minutes.
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import { html, pb } from "../lib.js";
import { parseProm, point } from "../prom.js";

const POLL_MS = 2000;
const KEEP = 300; // points: ten minutes

const CHARTS = [
  { id: "requests", title: "Requests / s", series: [["requests", "req/s", "#2563eb"]] },
  { id: "errors", title: "5xx errors / s", series: [["errors", "err/s", "#dc2626"]] },
  { id: "latency", title: "Latency (ms)", series: [["p50", "p50", "#16a34a"], ["p95", "p95", "#d97706"], ["p99", "p99", "#dc2626"]] },
  { id: "realtime", title: "Realtime connections", series: [["realtime", "connections", "#7c3aed"]] },
  { id: "cache", title: "Cache hit rate (%)", series: [["cacheHit", "hit %", "#0891b2"]] },
  { id: "refusals", title: "Rate-limit refusals / s", series: [["refusals", "refused/s", "#be123c"]] },
];

function Chart({ def, data }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(260, el.current.clientWidth - 8);
    plot.current = new uPlot({
      width, height: 160,
      // One point (the first sample) would stretch the axis over years: show a minute.
      scales: { x: { time: true, range: (u, min, max) => (max - min < 60 ? [max - 60, max + 1] : [min, max]) } },
      axes: [{}, { size: 50 }],
      legend: { show: true },
      series: [{}, ...def.series.map(([, label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))],
    }, [[], ...def.series.map(() => [])], el.current);
    const ro = new ResizeObserver(() => plot.current && plot.current.setSize({ width: Math.max(260, el.current.clientWidth - 8), height: 160 }));
    ro.observe(el.current);
    return () => { ro.disconnect(); plot.current.destroy(); plot.current = null; };
  }, []);
  useEffect(() => {
    if (plot.current) plot.current.setData([data.t, ...def.series.map(([k]) => data[k])]);
  }, [data]);
  const last = data.t.length ? def.series.map(([k, label]) => {
    // The latest value there is (a quiet interval has no latency).
    const v = [...data[k]].reverse().find((x) => x !== null && x !== undefined);
    return `${label} ${v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 0)}`;
  }).join(" · ") : "waiting for samples";
  return html`<figure class="chart" data-chart=${def.id}>
    <figcaption><b>${def.title}</b> <span class="muted small" aria-live="polite">${last}</span></figcaption>
    <div ref=${el}></div>
  </figure>`;
}

export function Metrics() {
  const empty = () => ({ t: [], requests: [], errors: [], p50: [], p95: [], p99: [], realtime: [], cacheHit: [], refusals: [] });
  const [data, setData] = useState(empty());
  const [err, setErr] = useState(null);
  const [samples, setSamples] = useState(0);
  useEffect(() => {
    let prev = null, prevT = 0, stop = false, timer = null;
    async function poll() {
      try {
        const r = await fetch("/metrics", { headers: { Authorization: pb.authStore.token } });
        if (!r.ok) throw new Error(r.status === 403 || r.status === 401
          ? "This server does not show /metrics to this client (see --metrics-access)."
          : `GET /metrics answered ${r.status}.`);
        const cur = parseProm(await r.text());
        const now = Date.now();
        if (prev) {
          const p = point(prev, cur, (now - prevT) / 1000);
          setData((d) => {
            const n = {};
            for (const k of Object.keys(d)) n[k] = d[k].slice(-KEEP + 1);
            n.t.push(now / 1000);
            for (const k of Object.keys(p)) n[k].push(p[k]);
            return n;
          });
        }
        prev = cur; prevT = now;
        setSamples((s) => s + 1);
        setErr(null);
      } catch (x) {
        setErr(x.message);
      }
      if (!stop) timer = setTimeout(poll, POLL_MS);
    }
    poll();
    return () => { stop = true; clearTimeout(timer); };
  }, []);
  return html`<section>
    <div class="page-head"><h1>Metrics</h1><span class="muted small">every ${POLL_MS / 1000} s from /metrics · ${samples} samples</span></div>
    ${err && html`<div class="banner error" role="alert">${err}</div>`}
    <div class="charts">${CHARTS.map((c) => html`<${Chart} key=${c.id} def=${c} data=${data} />`)}</div>
  </section>`;
}
