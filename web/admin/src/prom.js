// The Prometheus text format (as GET /metrics writes it) parsed in the browser, and
// what the metrics page draws from two samples of it.

// -> [{ name, labels: {k: v}, value }]
export function parseProm(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const v = m[4] === "+Inf" ? Infinity : Number(m[4]);
    if (!Number.isNaN(v)) out.push({ name: m[1], labels, value: v });
  }
  return out;
}

export function sum(samples, name, keep = () => true) {
  let s = 0;
  for (const x of samples) if (x.name === name && keep(x.labels)) s += x.value;
  return s;
}

// Cumulative histogram buckets summed over series: [[le, count], ...] by le.
export function buckets(samples, name, keep = () => true) {
  const by = new Map();
  for (const x of samples)
    if (x.name === name && keep(x.labels)) {
      const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
      by.set(le, (by.get(le) || 0) + x.value);
    }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

// The q-quantile of the observations between two bucket snapshots (linear within a
// bucket, as Prometheus' histogram_quantile does); null without observations.
export function quantile(q, prev, cur) {
  const d = cur.map(([le, c], i) => [le, c - ((prev[i] && prev[i][1]) || 0)]);
  const total = d.length ? d[d.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, c] of d) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      const inBucket = c - below;
      return inBucket > 0 ? lower + ((le - lower) * (rank - below)) / inBucket : le;
    }
    lower = le;
    below = c;
  }
  return lower;
}

const notMetrics = (l) => l.route !== "/metrics";

// One point of every series from two samples dt seconds apart.
export function point(prev, cur, dt) {
  const rate = (name, keep) => Math.max(0, (sum(cur, name, keep) - sum(prev, name, keep)) / dt);
  const hits = sum(cur, "basalt_cache_hits_total") - sum(prev, "basalt_cache_hits_total");
  const misses = sum(cur, "basalt_cache_misses_total") - sum(prev, "basalt_cache_misses_total");
  const hb = (s) => buckets(s, "basalt_http_request_duration_seconds_bucket", notMetrics);
  const bp = hb(prev), bc = hb(cur);
  const ms = (q) => { const v = quantile(q, bp, bc); return v === null ? null : v * 1000; };
  return {
    requests: rate("basalt_http_requests_total", notMetrics),
    errors: rate("basalt_http_errors_total"),
    p50: ms(0.5), p95: ms(0.95), p99: ms(0.99),
    realtime: sum(cur, "basalt_realtime_connections"),
    cacheHit: hits + misses > 0 ? (100 * hits) / (hits + misses) : null,
    refusals: rate("basalt_ratelimit_rejections_total"),
  };
}
