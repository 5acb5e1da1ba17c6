// The official PocketBase JS SDK, unchanged, against two Basalt instances on one
// PostgreSQL database behind a round-robin proxy (a stand-in for the load balancer):
// the SDK's stream lands on one instance and its subscription POST on the other; events
// committed through either instance reach it; when its instance is killed the SDK
// reconnects to the other and keeps receiving. Needs BASALT_TEST_PG_URL (else skipped).
// Prints "N passed, N failed" last.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { request as httpRequest, createServer as httpServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import EventSource from "eventsource";
import PocketBase from "pocketbase";

globalThis.EventSource = EventSource;

const BIN = process.env.BASALT_BIN || new URL("../../build/basalt", import.meta.url).pathname;
const PG = process.env.BASALT_TEST_PG_URL;
let passed = 0, failed = 0;

function check(name, cond, detail) {
  if (cond) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail !== undefined ? ": " + JSON.stringify(detail) : ""}`); }
}

if (!PG) {
  console.log("skipped: needs BASALT_TEST_PG_URL (scripts/pg-env.sh start DIR): two instances share one database");
  console.log("0 passed, 0 failed");
  process.exit(0);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = netServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitHealthy(url) {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(url + "/api/health")).ok) return; } catch {}
    await sleep(50);
  }
  throw new Error("server did not start");
}

async function until(cond, ms = 5000) {
  for (let t = 0; t < ms && !cond(); t += 25) await sleep(25);
  return cond();
}

const dir = mkdtempSync(join(tmpdir(), "basalt-js-inst-"));
const name = `bt_jsi_${process.pid}`;
const mk = spawnSync("psql", [PG, "-qAt", "-c", `CREATE DATABASE ${name}`]);
if (mk.status !== 0) { console.error(mk.stderr.toString()); process.exit(1); }
const direct = `${PG.replace(/\/[^/]*$/, "")}/${name}`;
const via = process.env.BASALT_TEST_PGB_URL ? `${process.env.BASALT_TEST_PGB_URL.replace(/\/[^/]*$/, "")}/${name}` : direct;
const db = [`--db=${via}`, `--db-listen=${direct}`];
const su = spawnSync(BIN, ["superuser", "upsert", "admin@example.com", "admin-password-1", `--dir=${dir}`, ...db]);
if (su.status !== 0) { console.error(su.stderr.toString()); process.exit(1); }

const servers = [];
async function startInstance(sub) {
  const port = await freePort();
  const d = join(dir, sub);
  spawnSync("mkdir", ["-p", d]);
  const proc = spawn(BIN, ["serve", `--http=127.0.0.1:${port}`, `--dir=${d}`, ...db, "--rate-limit-anon=0",
    "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"], { stdio: "ignore" });
  servers.push(proc);
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url);
  return { port, url, proc, alive: true };
}

// Round robin over the live instances, one request each; a connection refused marks
// the instance dead (the health check of a real load balancer).
const log = [];
let next = 0, backends = [];
const proxy = httpServer((req, res) => {
  const live = backends.filter((b) => b.alive);
  const b = live[next++ % live.length];
  log.push({ method: req.method, path: req.url.split("?")[0], to: b.name });
  const up = httpRequest({ host: "127.0.0.1", port: b.port, method: req.method, path: req.url, headers: req.headers },
    (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
      ur.on("close", () => { if (!ur.complete) res.destroy(); }); // the instance died mid-stream
    });
  up.on("error", () => { b.alive = false; if (!res.headersSent) res.writeHead(502); res.end(); });
  req.pipe(up);
});
const proxyPort = await freePort();
await new Promise((r) => proxy.listen(proxyPort, "127.0.0.1", r));
const lb = `http://127.0.0.1:${proxyPort}`;

try {
  const a = await startInstance("a");
  const admin = new PocketBase(a.url);
  admin.autoCancellation(false);
  await admin.collection("_superusers").authWithPassword("admin@example.com", "admin-password-1");
  await admin.collections.create({ name: "notes", listRule: "", viewRule: "", createRule: "",
    fields: [{ name: "text", type: "text" }] });
  const b = await startInstance("b"); // after the collection: an instance reads the schema at start-up
  a.name = "A"; b.name = "B";
  backends = [a, b];
  const adminB = new PocketBase(b.url);
  adminB.autoCancellation(false);
  adminB.authStore.save(admin.authStore.token, admin.authStore.record);

  const pb = new PocketBase(lb);
  pb.autoCancellation(false);
  const got = [];
  await pb.collection("notes").subscribe("*", (e) => got.push(`${e.action}:${e.record.text}`));
  const get = log.find((l) => l.method === "GET" && l.path === "/api/realtime");
  const post = log.find((l) => l.method === "POST" && l.path === "/api/realtime");
  check("the stream and its subscription POST went to different instances", get && post && get.to !== post.to,
    log);
  await adminB.collection("notes").create({ text: "from B" });
  await admin.collection("notes").create({ text: "from A" });
  check("events through both instances reach the SDK", await until(() => got.length >= 2) &&
    got.join() === "create:from B,create:from A", got);

  // The stream's instance dies; the SDK reconnects through the proxy to the other.
  const streamOn = get.to === "A" ? a : b, other = streamOn === a ? b : a;
  streamOn.proc.kill("SIGKILL");
  streamOn.alive = false;
  await until(() => log.filter((l) => l.method === "POST" && l.path === "/api/realtime").length >= 2, 15000);
  const writer = new PocketBase(other.url);
  writer.autoCancellation(false);
  writer.authStore.save(admin.authStore.token, admin.authStore.record);
  await sleep(300);
  await writer.collection("notes").create({ text: "after the failover" });
  check("after a failover the SDK receives events from the other instance",
    await until(() => got.includes("create:after the failover"), 10000), { got, log });
  pb.realtime.unsubscribe();
} catch (e) {
  check("scenario ran", false, String(e?.stack || e));
} finally {
  proxy.close();
  for (const p of servers) p.kill("SIGTERM");
  await sleep(300);
  rmSync(dir, { recursive: true, force: true });
  spawnSync("psql", [PG, "-qAt", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
