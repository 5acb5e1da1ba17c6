// The task manager on the official PocketBase JS SDK: sign-up and sign-in, tasks with
// title, status, priority and due date, filters and sort (done by the server's list
// API), per-status counts (the statistics API), live updates from other windows
// (caught up after a reconnection), and a reminder mailed a day before a task is due
// (the collection's "reminders" option in pb_schema.json: the server's jobs send it).
// Every user sees only their own tasks: the collection's rules say so (pb_schema.json).
import PocketBase from "pocketbase";

const pb = new PocketBase(location.origin);
pb.autoCancellation(false);
const $ = (s) => document.querySelector(s);
const STATUSES = ["todo", "doing", "done"];
const PRIORITY = { 1: "low", 2: "medium", 3: "high" };
let unsubscribe = null;

function errText(e) {
  const r = e && e.response;
  if (r && r.data && Object.keys(r.data).length)
    return Object.entries(r.data).map(([k, v]) => `${k}: ${v.message}`).join("; ");
  return (r && r.message) || (e && e.message) || "Something went wrong.";
}

function quote(s) {
  return '"' + s.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}

function currentFilter() {
  const f = new FormData($("#filters"));
  const parts = [];
  if (f.get("status")) parts.push(`status = ${quote(f.get("status"))}`);
  if (f.get("priority")) parts.push(`priority = ${Number(f.get("priority"))}`);
  if (f.get("q")) parts.push(`title ~ ${quote(f.get("q"))}`);
  return { filter: parts.join(" && "), sort: f.get("sort") || "-created" };
}

function taskItem(t) {
  const li = document.createElement("li");
  li.dataset.id = t.id;
  li.className = t.status;
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = t.title;
  const prio = document.createElement("span");
  prio.className = "prio-" + PRIORITY[t.priority];
  prio.textContent = PRIORITY[t.priority] || "";
  const due = document.createElement("span");
  due.className = "muted small";
  due.textContent = t.due ? "due " + new Date(t.due.replace(" ", "T")).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "";
  const status = document.createElement("select");
  status.setAttribute("aria-label", "status of " + t.title);
  for (const s of STATUSES) status.add(new Option(s, s, false, s === t.status));
  status.addEventListener("change", async () => {
    try { await pb.collection("tasks").update(t.id, { status: status.value }); await refresh(); }
    catch (e) { $("#task-error").textContent = errText(e); }
  });
  const edit = document.createElement("button");
  edit.className = "ghost";
  edit.textContent = "Rename";
  edit.setAttribute("aria-label", "rename " + t.title);
  edit.addEventListener("click", async () => {
    const v = prompt("New title", t.title);
    if (v === null || !v.trim()) return;
    try { await pb.collection("tasks").update(t.id, { title: v.trim() }); await refresh(); }
    catch (e) { $("#task-error").textContent = errText(e); }
  });
  const del = document.createElement("button");
  del.className = "ghost";
  del.textContent = "Delete";
  del.setAttribute("aria-label", "delete " + t.title);
  del.addEventListener("click", async () => {
    try { await pb.collection("tasks").delete(t.id); await refresh(); }
    catch (e) { $("#task-error").textContent = errText(e); }
  });
  li.append(title, prio, due, status, edit, del);
  return li;
}

// Refreshes overlap: an event from another window, the add form's own, each change of
// a filter. Answers can come back in any order (two requests, two server threads), so
// only the refresh started last draws: an older, slower answer never replaces a newer
// list (it did: a task just added vanished until the next change).
let refreshes = 0;

async function refresh() {
  const mine = ++refreshes;
  const { filter, sort } = currentFilter();
  // The counts per status in one request: Basalt's statistics API, under the list
  // rule, so they count only this user's tasks (on plain PocketBase, one
  // getList(1, 1, {filter: 'status = "todo"'}) per status gives the same totals).
  const [list, stats] = await Promise.all([
    pb.collection("tasks").getList(1, 200, { filter, sort }),
    pb.send("/api/basalt/collections/tasks/stats", { query: { groupBy: "status", aggregates: "count" } }),
  ]);
  if (mine !== refreshes) return;
  const by = Object.fromEntries(stats.items.map((i) => [i.group.status, i.count]));
  const counts = STATUSES.map((s) => ({ totalItems: by[s] || 0 }));
  const ul = $("#tasks");
  ul.replaceChildren(...list.items.map(taskItem));
  if (list.items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted empty";
    li.textContent = filter ? "No task matches the filters." : "No tasks yet: add one above.";
    ul.append(li);
  }
  const total = counts.reduce((a, c) => a + c.totalItems, 0);
  $("#stats").replaceChildren(...[["all", total], ...STATUSES.map((s, i) => [s, counts[i].totalItems])].map(([k, n]) => {
    const d = document.createElement("div");
    d.className = "stat";
    d.dataset.stat = k;
    d.innerHTML = `<b></b><span></span>`;
    d.querySelector("b").textContent = n;
    d.querySelector("span").textContent = k;
    return d;
  }));
}

async function show() {
  const signedIn = pb.authStore.isValid && pb.authStore.record && pb.authStore.record.collectionName === "users";
  $("#auth").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#signout").hidden = !signedIn;
  $("#who").textContent = signedIn ? pb.authStore.record.name || pb.authStore.record.email : "";
  if (unsubscribe) { await unsubscribe(); unsubscribe = null; }
  if (!signedIn) return;
  await refresh();
  // Another window (or another client) changes a task: the list follows.
  await pb.collection("tasks").subscribe("*", () => refresh().catch(() => {}));
  // The connection can drop (the server restarts, the network goes): the SDK
  // reconnects and subscribes again by itself, but what changed while it was away
  // sends no event. The connection is up once the subscription above resolved, so
  // every PB_CONNECT from now on is a reconnection: it reloads the list, and nothing
  // is missed.
  await pb.realtime.subscribe("PB_CONNECT", () => {
    refresh().catch(() => {});
    $("#live").textContent = "Live: changes made elsewhere appear here.";
  });
  pb.realtime.onDisconnect = () => { $("#live").textContent = "Reconnecting…"; };
  // All at once (the SDK then closes the connection): one topic at a time would send
  // the remaining ones again, refused once the sign-out changed who is asking.
  unsubscribe = async () => { pb.realtime.onDisconnect = undefined; await pb.realtime.unsubscribe(); };
  $("#live").textContent = "Live: changes made elsewhere appear here.";
}

$("#signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  $("#auth-error").textContent = "";
  try { await pb.collection("users").authWithPassword(f.get("email"), f.get("password")); await show(); }
  catch (x) { $("#auth-error").textContent = errText(x); }
});

$("#signup").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  $("#auth-error").textContent = "";
  try {
    await pb.collection("users").create({ name: f.get("name"), email: f.get("email"),
      password: f.get("password"), passwordConfirm: f.get("password") });
    await pb.collection("users").authWithPassword(f.get("email"), f.get("password"));
    await show();
  } catch (x) { $("#auth-error").textContent = errText(x); }
});

// The subscriptions go first, while the request still carries the user's token.
$("#signout").addEventListener("click", async () => {
  if (unsubscribe) { await unsubscribe().catch(() => {}); unsubscribe = null; }
  pb.authStore.clear();
  show();
});

$("#new-task").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  $("#task-error").textContent = "";
  try {
    await pb.collection("tasks").create({ title: f.get("title"), status: "todo", priority: Number(f.get("priority")),
      // The browser's local date and time, sent in UTC.
      due: f.get("due") ? new Date(f.get("due")).toISOString().replace("T", " ") : "", owner: pb.authStore.record.id });
    e.target.reset();
    await refresh();
  } catch (x) { $("#task-error").textContent = errText(x); }
});

$("#filters").addEventListener("input", () => refresh().catch((x) => { $("#task-error").textContent = errText(x); }));

show().catch((x) => { $("#task-error").textContent = errText(x); });
