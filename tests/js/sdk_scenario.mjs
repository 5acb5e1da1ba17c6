// The official PocketBase JS SDK, unchanged, against a real Basalt server:
// superuser login, collections, records CRUD with filters, sort, expand, fields,
// a user signing up and seeing only its own records. Prints "N passed, N failed".
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import EventSource from "eventsource";
import PocketBase from "pocketbase";

// Node has no EventSource; browsers do. The SDK uses the global one.
globalThis.EventSource = EventSource;

const BIN = process.env.BASALT_BIN || new URL("../../build/basalt", import.meta.url).pathname;
let passed = 0, failed = 0;

function check(name, cond, detail) {
  if (cond) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail !== undefined ? ": " + JSON.stringify(detail) : ""}`); }
}

async function expectError(name, promise, status) {
  try { await promise; check(name, false, "no error"); }
  catch (e) { check(name, e.status === status && typeof e.response?.message === "string", { status: e.status, r: e.response }); }
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitHealthy(url) {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(url + "/api/health")).ok) return; } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("server did not start");
}

const dir = mkdtempSync(join(tmpdir(), "basalt-js-"));
// BASALT_TEST_DB / BASALT_TEST_DB_LISTEN: run on PostgreSQL (make test creates the database).
const db = process.env.BASALT_TEST_DB ? [`--db=${process.env.BASALT_TEST_DB}`] : [];
if (process.env.BASALT_TEST_DB_LISTEN) db.push(`--db-listen=${process.env.BASALT_TEST_DB_LISTEN}`);
const su = spawnSync(BIN, ["superuser", "upsert", "admin@example.com", "admin-password-1", `--dir=${dir}`, ...db]);
if (su.status !== 0) { console.error(su.stderr.toString()); process.exit(1); }
const port = await freePort();
const server = spawn(BIN, ["serve", `--http=127.0.0.1:${port}`, `--dir=${dir}`, ...db, "--rate-limit-anon=0",
  "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"], { stdio: "ignore" });
const url = `http://127.0.0.1:${port}`;

try {
  await waitHealthy(url);
  const pb = new PocketBase(url);
  pb.autoCancellation(false);

  const health = await pb.health.check();
  check("health", health.code === 200 && health.message === "API is healthy.", health);

  const auth = await pb.collection("_superusers").authWithPassword("admin@example.com", "admin-password-1");
  check("superuser login", pb.authStore.isValid && pb.authStore.isSuperuser && auth.record.email === "admin@example.com");
  await pb.collection("_superusers").authRefresh();
  check("superuser refresh", pb.authStore.isValid);

  // A fresh data folder has PocketBase's default users collection: the app adjusts it.
  const byDefault = await pb.collections.getOne("users");
  check("default users collection", byDefault.id === "_pb_users_auth_" && byDefault.type === "auth" &&
    byDefault.createRule === "" && byDefault.fields.some((f) => f.name === "avatar"), byDefault);
  const users = await pb.collections.update("users", {
    createRule: "", listRule: "id = @request.auth.id", viewRule: "id = @request.auth.id",
    fields: [...byDefault.fields.filter((f) => f.name !== "name"), { name: "name", type: "text" }],
  });
  const tasks = await pb.collections.create({
    name: "tasks",
    listRule: "owner = @request.auth.id", viewRule: "owner = @request.auth.id",
    createRule: "owner = @request.auth.id", updateRule: "owner = @request.auth.id", deleteRule: "owner = @request.auth.id",
    fields: [
      { name: "title", type: "text", required: true },
      { name: "priority", type: "number" },
      { name: "status", type: "select", values: ["todo", "doing", "done"] },
      { name: "owner", type: "relation", collectionId: users.id, required: true },
      { name: "created", type: "autodate", onCreate: true },
    ],
    indexes: ["CREATE INDEX idx_tasks_owner ON tasks (owner, created)", "CREATE INDEX idx_tasks_sp ON tasks (status, priority)"],
  });
  check("create collections", users.type === "auth" && tasks.fields.some((f) => f.name === "owner"));
  const list = await pb.collections.getFullList();
  check("list collections", list.some((c) => c.name === "tasks"));

  // A user signs up and logs in on a client of its own.
  const alice = new PocketBase(url); alice.autoCancellation(false);
  const bob = new PocketBase(url); bob.autoCancellation(false);
  const a = await alice.collection("users").create({ email: "alice@example.com", password: "alice-pass-1", passwordConfirm: "alice-pass-1", name: "Alice" });
  await bob.collection("users").create({ email: "bob@example.com", password: "bob-pass-11", passwordConfirm: "bob-pass-11", name: "Bob" });
  check("sign up (email hidden from an anonymous creator)", a.id && a.name === "Alice" && a.email === undefined, a);
  await alice.collection("users").authWithPassword("alice@example.com", "alice-pass-1");
  await bob.collection("users").authWithPassword("bob@example.com", "bob-pass-11");
  check("user login", alice.authStore.isValid && !alice.authStore.isSuperuser && alice.authStore.record.id === a.id);

  for (let i = 0; i < 5; i++) {
    await alice.collection("tasks").create({ title: `alice ${i}`, priority: i, status: i < 3 ? "todo" : "done", owner: a.id });
  }
  const bt = await bob.collection("tasks").create({ title: "bob 0", priority: 9, status: "todo", owner: bob.authStore.record.id });
  await expectError("cannot create for another user", bob.collection("tasks").create({ title: "x", owner: a.id }), 400);

  const mine = await alice.collection("tasks").getList(1, 10, { filter: 'status = "todo" && priority >= 1', sort: "-priority" });
  check("filter + sort", mine.totalItems === 2 && mine.items.map((t) => t.title).join() === "alice 2,alice 1", mine);
  const full = await alice.collection("tasks").getFullList({ sort: "created" });
  check("only own records", full.length === 5 && full.every((t) => t.owner === a.id));
  const first = await alice.collection("tasks").getFirstListItem('title = "alice 3"', { expand: "owner", fields: "id,title,expand.owner.name" });
  check("getFirstListItem + expand + fields", first.title === "alice 3" && first.expand?.owner?.name === "Alice" && first.priority === undefined, first);
  await expectError("cannot view another user's record", alice.collection("tasks").getOne(bt.id), 404);
  await expectError("cannot update another user's record", alice.collection("tasks").update(bt.id, { title: "hacked" }), 404);
  await expectError("cannot delete another user's record", alice.collection("tasks").delete(bt.id), 404);

  const up = await alice.collection("tasks").update(first.id, { "priority+": 10, status: "doing" });
  check("update with modifier", up.priority === 13 && up.status === "doing", up);
  const batch = alice.createBatch();
  batch.collection("tasks").create({ title: "batch 1", priority: 1, owner: a.id });
  batch.collection("tasks").create({ title: "batch 2", priority: 2, owner: a.id });
  batch.collection("tasks").update(first.id, { "priority-": 3 });
  const res = await batch.send();
  check("batch through the SDK", res.length === 3 && res.every((r) => r.status === 200) && res[2].body.priority === 10, res);
  const bad = alice.createBatch();
  bad.collection("tasks").create({ title: "never", owner: a.id });
  bad.collection("tasks").create({ title: "steal", owner: bob.authStore.record.id });
  try { await bad.send(); check("failing batch", false); } catch (e) {
    check("failing batch rolls back", e.status === 400 && e.response?.data?.requests?.["1"]?.code === "batch_request_failed", e.response);
  }
  const never = await alice.collection("tasks").getList(1, 1, { filter: 'title = "never"' });
  check("nothing of the failed batch stored", never.totalItems === 0);
  await alice.collection("tasks").delete(res[0].body.id);
  await alice.collection("tasks").delete(res[1].body.id);
  const skip = await alice.collection("tasks").getList(1, 2, { skipTotal: true });
  check("skipTotal", skip.totalItems === -1 && skip.items.length === 2, skip);
  check("delete", (await alice.collection("tasks").delete(first.id)) === true);
  await expectError("deleted is gone", alice.collection("tasks").getOne(first.id), 404);

  await expectError("validation error shape", alice.collection("tasks").create({ owner: a.id }), 400);
  try { await alice.collection("tasks").create({ owner: a.id }); } catch (e) {
    check("field error for title", e.response?.data?.title?.code === "validation_required", e.response);
  }
  await expectError("bad filter", alice.collection("tasks").getList(1, 5, { filter: "title = " }), 400);
  await expectError("users cannot list collections", alice.collections.getList(), 403);

  // Realtime: the SDK's subscribe() over SSE, unchanged; rules decide delivery.
  const seen = [];
  const unsub = await alice.collection("tasks").subscribe("*", (e) => seen.push(e));
  const rt = await alice.collection("tasks").create({ title: "rt", owner: a.id });
  await bob.collection("tasks").create({ title: "bob rt", owner: bob.authStore.record.id });
  await alice.collection("tasks").update(rt.id, { title: "rt 2" });
  await alice.collection("tasks").delete(rt.id);
  for (let i = 0; i < 100 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200));
  check("subscribe: create, update, delete in order", seen.map((e) => e.action).join() === "create,update,delete" &&
    seen[0].record.title === "rt" && seen[1].record.title === "rt 2", seen);
  check("subscribe: others' records are not delivered", seen.every((e) => e.record.owner === a.id), seen);
  const one = [];
  const bt2 = await bob.collection("tasks").create({ title: "watched", owner: bob.authStore.record.id });
  const unsubOne = await bob.collection("tasks").subscribe(bt2.id, (e) => one.push(e));
  await bob.collection("tasks").update(bt2.id, { title: "watched 2" });
  for (let i = 0; i < 100 && one.length < 1; i++) await new Promise((r) => setTimeout(r, 50));
  check("subscribe to one record", one.length === 1 && one[0].record.title === "watched 2", one);
  await unsubOne();
  await unsub();
  await alice.collection("tasks").create({ title: "after unsubscribe", owner: a.id });
  await new Promise((r) => setTimeout(r, 300));
  check("unsubscribe stops delivery", seen.length === 3, seen.length);

  // Superuser sees everything; schema change online.
  const all = await pb.collection("tasks").getFullList();
  check("superuser sees all", all.length === 8, all.length);
  const updated = await pb.collections.update("tasks", { fields: [...tasks.fields, { name: "notes", type: "editor" }] });
  check("add field online", updated.fields.some((f) => f.name === "notes"));
  const withNotes = await pb.collection("tasks").update(bt.id, { notes: "<p>hi</p>" });
  check("write new field", withNotes.notes === "<p>hi</p>");
  await pb.collections.delete("tasks");
  await expectError("collection deleted", pb.collection("tasks").getList(), 404);
} catch (e) {
  failed++;
  console.log("FAIL unexpected error:", e?.status, JSON.stringify(e?.response ?? e?.message ?? e));
} finally {
  server.kill("SIGTERM");
  await new Promise((r) => server.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
