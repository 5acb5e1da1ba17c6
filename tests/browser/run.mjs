// Browser tests: the dashboard at /_/ and the task manager example, in Debian's
// Chromium (headless) driven by playwright-core, against a Basalt of their own (a
// temporary folder, a free loopback port). Every test fails on a console error or a
// page error. Screenshots of each main page go to BROWSER_SHOTS. Ends with
// "N passed, N failed".
import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const BIN = process.env.BASALT_BIN || join(root, "build/basalt");
const SHOTS = process.env.BROWSER_SHOTS || join(root, "build/browser-shots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ADMIN = { email: "admin@example.com", password: "admin-password-1" };
mkdirSync(SHOTS, { recursive: true });

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

const dir = mkdtempSync(join(tmpdir(), "basalt-browser-"));
const ON_PG = /^postgres(ql)?:/.test(process.env.BASALT_TEST_DB || "");
const dbArgs = process.env.BASALT_TEST_DB ? [`--db=${process.env.BASALT_TEST_DB}`] : [];
execFileSync(BIN, ["superuser", "upsert", ADMIN.email, ADMIN.password, `--dir=${dir}`, ...dbArgs], { stdio: "inherit" });
const port = await freePort();
const URL = `http://127.0.0.1:${port}`;
// The SMTP server the reminder test points the settings at (tests/integration/smtp_fixture.py):
// every mail becomes a file in mailDir.
const mailDir = join(dir, "mail");
const smtpPort = await freePort();
const smtp = spawn("/usr/bin/python3", [join(root, "tests/integration/smtp_fixture.py"), String(smtpPort), mailDir], { stdio: ["ignore", "pipe", "inherit"] });
await new Promise((ok, no) => {
  smtp.stdout.once("data", (d) => (String(d).includes("ready") ? ok() : no(new Error("smtp fixture: " + d))));
  smtp.once("exit", () => no(new Error("the smtp fixture exited")));
});
let server = null, serverLog = "";
// Starts Basalt (again, for the restart tests: same folder, same port).
function startServer() {
  server = spawn(BIN, ["serve", `--http=127.0.0.1:${port}`, `--dir=${dir}`, "--threads=2", ...dbArgs,
    "--rate-limit-anon=0", "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0",
    "--mail-rate-limit=0", "--mail-rate-limit-ip=0", "--jobs-poll-ms=100",
    `--public-dir=${join(root, "examples/taskmanager/pb_public")}`,
    `--admin-dir=${process.env.BASALT_ADMIN_DIR || join(root, "build/web/admin")}`], { stdio: ["ignore", "ignore", "pipe"] });
  server.stderr.on("data", (d) => { serverLog += d; });
}
async function stopServer() {
  const exited = new Promise((r) => server.once("exit", (c) => r(c)));
  server.kill("SIGTERM");
  return exited;
}
startServer();

async function api(method, path, body, token) {
  const r = await fetch(URL + path, { method, headers: { "content-type": "application/json", ...(token ? { authorization: token } : {}) },
    body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
async function waitHealthy() {
  for (let i = 0; ; i++) {
    try { await api("GET", "/api/health"); return; } catch (e) {
      if (i > 300) throw new Error("basalt did not start:\n" + serverLog);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
await waitHealthy();
const adminToken = (await api("POST", "/api/collections/_superusers/auth-with-password", { identity: ADMIN.email, password: ADMIN.password })).token;
// The example's schema goes in through its own setup.mjs, as the README says, onto a
// server that already has a `users` auth collection (a fresh data folder has
// PocketBase's, id _pb_users_auth_, with an avatar field that must stay); run twice,
// since it must be idempotent.
if (!(await fetch(URL + "/api/collections/users", { headers: { authorization: adminToken } })).ok)
  await api("POST", "/api/collections", { id: "_pb_users_auth_", name: "users", type: "auth",
    fields: [{ name: "name", type: "text", max: 255 }, { name: "avatar", type: "file", maxSelect: 1 }] }, adminToken);
for (let i = 0; i < 2; i++)
  execFileSync("node", [join(root, "examples/taskmanager/setup.mjs"), URL, ADMIN.email, ADMIN.password], { stdio: "inherit" });
{
  const u = await api("GET", "/api/collections/users", null, adminToken);
  const names = u.fields.map((f) => f.name);
  if (!(names.includes("avatar") && names.includes("name") && u.createRule === "" && u.listRule === "id = @request.auth.id"))
    throw new Error("setup.mjs did not keep the users collection's fields or set the example's rules: " + JSON.stringify(u));
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"] });

// ---- a tiny test runner ----
const tests = [];
const test = (name, fn, opts) => tests.push({ name, fn, opts });

// A bound on waiting, not a timing: generous, so a loaded machine (make test runs
// suites side by side) is not read as a failure.
async function until(what, fn, timeout = 20000) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try { const v = await fn(); if (v) return v; last = v; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last instanceof Error ? ": " + last.message : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
function assert(cond, msg) { if (!cond) throw new Error("assertion failed: " + msg); }

// A page whose console errors and page errors fail the test.
async function newPage(errors, opts = {}) {
  const ctx = await browser.newContext({ viewport: opts.viewport || { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.setDefaultTimeout(8000);
  return page;
}
const shot = (page, name) => page.screenshot({ path: join(SHOTS, name + ".png"), fullPage: false });

// The visible form controls and buttons of the page that have no accessible name (a
// <label>, aria-label, aria-labelledby or title; a button's text counts for buttons).
const unlabeled = (page) => page.evaluate(() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((el) => el.type !== "hidden" && el.offsetParent !== null)
  .filter((el) => {
    const named = (el.getAttribute("aria-label") || "").trim() || el.getAttribute("aria-labelledby") || (el.getAttribute("title") || "").trim()
      || [...(el.labels || [])].some((l) => l.textContent.trim());
    return !named && !(el.tagName === "BUTTON" && el.textContent.trim());
  })
  .map((el) => el.outerHTML.slice(0, 120)));
// The page does not scroll sideways (its content fits the viewport's width).
const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
// What sticks out on the right (for the failure message).
const sticksOut = (page) => page.evaluate(() => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${el.className} (${Math.round(el.getBoundingClientRect().right)} px)`).join(", "));
// Presses Tab (Shift+Tab when back) until the focused element satisfies pred (it gets
// the element, in the page); fails after max presses.
async function tabTo(page, pred, arg, { max = 80, back = false } = {}) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    if (await page.evaluate(pred, arg)) return;
  }
  throw new Error("Tab never reached " + pred.toString().slice(0, 120) + " " + (arg || ""));
}
const focusedText = (t) => { const a = document.activeElement; return !!a && (a.textContent.trim() === t || a.getAttribute("aria-label") === t); };
const inDialog = () => !!document.activeElement && !!document.activeElement.closest("[role=dialog]");

async function adminSignIn(page) {
  await page.goto(URL + "/_/");
  await page.fill('input[name="email"]', ADMIN.email);
  await page.fill('input[name="password"]', ADMIN.password);
  await page.click('button[type="submit"]');
  await page.waitForSelector("h1:has-text('Collections')");
}

// ---- the dashboard ----
test("dashboard: a wrong password is refused, then sign-in shows the collections", async (page) => {
  await page.goto(URL + "/_/");
  await shot(page, "signin");
  await page.fill('input[name="email"]', ADMIN.email);
  await page.fill('input[name="password"]', "wrong-password");
  await page.click('button[type="submit"]');
  await page.waitForSelector(".banner.error");
  await page.fill('input[name="password"]', ADMIN.password);
  await page.click('button[type="submit"]');
  await page.waitForSelector("tr[data-collection='tasks']");
  assert(await page.isVisible("tr[data-collection='_superusers']"), "system collection listed");
  await shot(page, "collections");
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: create a collection with fields and a rule; a bad rule's error shows beside it", async (page) => {
  await adminSignIn(page);
  await page.click("text=New collection");
  await page.fill('input[name="name"]', "notes");
  await page.fill('input[aria-label="field 1 name"]', "title");
  await page.click("text=Add field");
  await page.fill('input[aria-label="field 2 name"]', "kind");
  await page.selectOption('select[aria-label="field 2 type"]', "select");
  await page.fill('input[aria-label="values of kind"]', "idea, todo");
  await page.click("text=Add field");
  await page.fill('input[aria-label="field 3 name"]', "meta");
  await page.selectOption('select[aria-label="field 3 type"]', "json");
  await page.uncheck('input[aria-label="List rule locked"]');
  await page.fill("#rule-listRule", 'title = ');
  await page.uncheck('input[aria-label="View rule locked"]');
  await page.fill("#rule-viewRule", "");
  await page.click('form.editor button[type="submit"]');
  const err = await page.waitForSelector("[data-error-for='listRule']");
  assert((await err.textContent()).length > 5, "the rule error has a message");
  await shot(page, "collection-rule-error");
  await page.fill("#rule-listRule", 'title != ""');
  await page.click('form.editor button[type="submit"]');
  await page.waitForSelector("h1:has-text('notes')");
  const c = await api("GET", "/api/collections/notes", null, adminToken);
  assert(c.listRule === 'title != ""' && c.viewRule === "" && c.createRule === null, "rules saved: " + JSON.stringify(c));
  assert(c.fields.some((f) => f.name === "kind" && f.type === "select" && f.values.join() === "idea,todo"), "select field saved");
  await shot(page, "collection-editor");
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: each of the five rules shows its own error beside it; a bad index its error under the indexes", async (page) => {
  await adminSignIn(page);
  await page.click("text=New collection");
  await page.fill('input[name="name"]', "rulecheck");
  await page.fill('input[aria-label="field 1 name"]', "title");
  const bad = { listRule: "title = ", viewRule: "nosuch = 1", createRule: "title ~", updateRule: "(title = 'a'", deleteRule: "@request.nope = 1" };
  const label = { listRule: "List", viewRule: "View", createRule: "Create", updateRule: "Update", deleteRule: "Delete" };
  for (const [k, v] of Object.entries(bad)) {
    await page.uncheck(`input[aria-label="${label[k]} rule locked"]`);
    await page.fill(`#rule-${k}`, v);
  }
  await page.click('form.editor button[type="submit"]');
  for (const k of Object.keys(bad)) {
    // In the rule's own row, next to its box.
    const e = page.locator(`.rule-row:has(#rule-${k}) [data-error-for='${k}']`);
    await e.waitFor();
    assert((await e.textContent()).length > 5, k + " has a message");
  }
  await shot(page, "collection-five-rule-errors");
  const r = await fetch(URL + "/api/collections/rulecheck", { headers: { authorization: adminToken } });
  assert(r.status === 404, "nothing was created");
  // Good rules, a bad index: its error under the indexes box.
  for (const k of Object.keys(bad)) await page.fill(`#rule-${k}`, k === "createRule" ? "" : 'title != ""');
  await page.fill('textarea[name="indexes"]', "CREATE INDEX broken ON rulecheck (nosuchcolumn)");
  await page.click('form.editor button[type="submit"]');
  await page.waitForSelector("fieldset:has(textarea[name=indexes]) [data-error-for='indexes']");
  for (const k of Object.keys(bad)) assert(!(await page.isVisible(`[data-error-for='${k}']`)), k + " error went");
  await page.fill('textarea[name="indexes"]', "CREATE INDEX idx_rulecheck_title ON rulecheck (title)");
  await page.click('form.editor button[type="submit"]');
  await page.waitForSelector("h1:has-text('rulecheck')");
  const c = await api("GET", "/api/collections/rulecheck", null, adminToken);
  assert(c.listRule === 'title != ""' && c.createRule === "" && c.deleteRule === 'title != ""' && c.indexes.length === 1, "saved: " + JSON.stringify(c));
  await api("DELETE", "/api/collections/rulecheck", null, adminToken);
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: a collection is edited (a field added, an index) and another deleted after typing its name", async (page) => {
  await api("POST", "/api/collections", { name: "scratch", fields: [{ name: "x", type: "text" }] }, adminToken);
  await adminSignIn(page);
  await page.goto(URL + "/_/#/collections/notes/edit");
  await page.waitForSelector('input[name="name"]');
  await page.click("text=Add field");
  const n = await page.locator(".field-row[data-field]").count();
  await page.fill(`input[aria-label="field ${n + 1} name"]`, "score");
  await page.selectOption(`select[aria-label="field ${n + 1} type"]`, "number");
  // Its options: min, max, integers only.
  const row = page.locator(`.field-row[data-field="${n}"]`);
  await row.locator('label:has-text("min") input').fill("0");
  await row.locator('label:has-text("max") input').fill("10");
  await row.locator('label:has-text("integers only") input').check();
  await page.fill('textarea[name="indexes"]', "CREATE INDEX idx_notes_title ON notes (title)");
  await page.click('form.editor button[type="submit"]');
  await page.waitForSelector(".toast:has-text('Saved notes')");
  const c = await api("GET", "/api/collections/notes", null, adminToken);
  assert(c.fields.some((f) => f.name === "score" && f.type === "number" && f.min === 0 && f.max === 10 && f.onlyInt === true),
    "field added with its options: " + JSON.stringify(c.fields));
  assert(c.indexes.length === 1 && c.indexes[0].includes("idx_notes_title"), "index saved: " + c.indexes);
  await page.goto(URL + "/_/#/collections/scratch/edit");
  await page.click('.page-head button:has-text("Delete")');
  assert(await page.isDisabled("[data-testid='confirm']"), "confirm waits for the name");
  await page.fill('input[aria-label="confirmation"]', "scratch");
  await page.click("[data-testid='confirm']");
  await page.waitForSelector("h1:has-text('Collections')");
  assert(!(await page.isVisible("tr[data-collection='scratch']")), "gone from the list");
  const r = await fetch(URL + "/api/collections/scratch", { headers: { authorization: adminToken } });
  assert(r.status === 404, "deleted on the server");
});

test("dashboard: records are added, edited, filtered (errors inline) and deleted", async (page) => {
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/notes");
  await page.waitForSelector("text=No records");
  for (const [title, kind] of [["buy milk", "todo"], ["write docs", "idea"], ["call bob", "todo"]]) {
    await page.click("text=New record");
    await page.fill('input[name="title"]', title);
    await page.selectOption('select[name="kind"]', kind);
    await page.fill('textarea[name="meta"]', '{"n": 1}');
    await page.click('.modal button[type="submit"]');
    await page.waitForSelector(`td:has-text("${title}")`);
  }
  // Edit
  await page.click('tr:has-text("buy milk") >> text=Edit');
  await page.fill('input[name="title"]', "buy oat milk");
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector('td:has-text("buy oat milk")');
  // Sort by column
  await page.click('th button:has-text("title")');
  await page.waitForSelector('th[aria-sort="ascending"]');
  await until("sorted by title", async () => {
    const t = await page.locator('tbody td[data-label="title"]').allTextContents();
    return t.length === 3 && JSON.stringify(t) === JSON.stringify([...t].sort());
  });
  await page.click('th button:has-text("title")');
  await until("sorted by title, descending", async () => {
    const t = await page.locator('tbody td[data-label="title"]').allTextContents();
    return t.length === 3 && JSON.stringify(t) === JSON.stringify([...t].sort().reverse());
  });
  // A bad filter: the error under the box; a good one narrows.
  await page.fill('input[name="filter"]', 'nosuchfield = 1');
  await page.click('button:has-text("Filter")');
  await page.waitForSelector("[data-error-for='filter']");
  await page.fill('input[name="filter"]', 'kind = "todo"');
  await page.click('button:has-text("Filter")');
  await until("two todo rows", async () => (await page.locator("tbody tr[data-id]").count()) === 2);
  assert(!(await page.isVisible("[data-error-for='filter']")), "the error went");
  await shot(page, "records");
  // Delete
  await page.click('tr:has-text("call bob") >> text=Delete');
  await page.click("[data-testid='confirm']");
  await until("one row left", async () => (await page.locator("tbody tr[data-id]").count()) === 1);
  const all = await api("GET", "/api/collections/notes/records", null, adminToken);
  assert(all.totalItems === 2, "two records remain");
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: the json editor shows a parse error inline and nothing is saved until it parses", async (page) => {
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/notes");
  await page.waitForSelector("tbody tr[data-id]");
  const before = (await api("GET", "/api/collections/notes/records", null, adminToken)).totalItems;
  await page.click("text=New record");
  await page.fill('.modal input[name="title"]', "json check");
  await page.fill('.modal textarea[name="meta"]', '{"tags": ["a", ');
  await page.waitForSelector(".modal [data-error-for='meta-json']");
  assert((await page.getAttribute('.modal textarea[name="meta"]', "aria-invalid")) === "true", "the box is marked invalid");
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector(".modal .banner.error:has-text('meta')");
  assert((await api("GET", "/api/collections/notes/records", null, adminToken)).totalItems === before, "nothing saved");
  await page.fill('.modal textarea[name="meta"]', '{"tags": ["a", "b"], "n": 2}');
  assert(!(await page.isVisible(".modal [data-error-for='meta-json']")), "the error went");
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector('td:has-text("json check")');
  const r = (await api("GET", "/api/collections/notes/records?filter=" + encodeURIComponent('title="json check"'), null, adminToken)).items[0];
  // (PostgreSQL's jsonb keeps the keys in its own order.)
  assert(r.meta && r.meta.n === 2 && JSON.stringify(r.meta.tags) === '["a","b"]' && Object.keys(r.meta).length === 2,
    "saved as JSON: " + JSON.stringify(r.meta));
  await api("DELETE", `/api/collections/notes/records/${r.id}`, null, adminToken);
});

test("dashboard: records page through 20 at a time", async (page) => {
  await api("POST", "/api/collections", { name: "many", listRule: "", fields: [{ name: "n", type: "number" }] }, adminToken);
  await api("POST", "/api/batch", { requests: Array.from({ length: 25 }, (_, i) => ({ method: "POST", url: "/api/collections/many/records", body: { n: i } })) }, adminToken);
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/many");
  await page.waitForSelector("text=Page 1 of 2 · 25 records");
  assert((await page.locator("tbody tr[data-id]").count()) === 20, "twenty on the first page");
  await page.click('nav.pager button:has-text("Next")');
  await page.waitForSelector("text=Page 2 of 2 · 25 records");
  assert((await page.locator("tbody tr[data-id]").count()) === 5, "five on the second");
  assert(await page.isDisabled('nav.pager button:has-text("Next")'), "no page after the last");
  await page.click('nav.pager button:has-text("Previous")');
  await page.waitForSelector("text=Page 1 of 2 · 25 records");
});

test("dashboard: a list without its total (past the count budget) still pages on while pages are full", async (page) => {
  await api("POST", "/api/collections", { name: "uncounted", listRule: "", fields: [{ name: "n", type: "number" }] }, adminToken);
  await api("POST", "/api/batch", { requests: Array.from({ length: 30 }, (_, i) => ({ method: "POST", url: "/api/collections/uncounted/records", body: { n: i } })) }, adminToken);
  // The server answers -1 when a count outlasts --count-budget-ms (tested in
  // test_count_budget.py); here each list answer is made such an answer.
  await page.route("**/api/collections/uncounted/records?**", async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    await route.fulfill({ response: res, json: { ...body, totalItems: -1, totalPages: -1 } });
  });
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/uncounted");
  await page.waitForSelector("text=Page 1 · too many records to count");
  assert((await page.locator("tbody tr[data-id]").count()) === 20, "a full first page");
  assert(!(await page.isDisabled('nav.pager button:has-text("Next")')), "a full page may have a next one");
  await page.click('nav.pager button:has-text("Next")');
  await page.waitForSelector("text=Page 2 · too many records to count");
  assert((await page.locator("tbody tr[data-id]").count()) === 10, "the ten left");
  assert(await page.isDisabled('nav.pager button:has-text("Next")'), "a page not full is the last");
});

test("dashboard: a record created by another client appears live", async (page) => {
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/notes");
  await page.waitForSelector(".live.on");
  const r = await api("POST", "/api/collections/notes/records", { title: "from the api", kind: "idea" }, adminToken);
  await page.waitForSelector('td:has-text("from the api")');
  await api("PATCH", `/api/collections/notes/records/${r.id}`, { title: "changed by the api" }, adminToken);
  await page.waitForSelector(`tr[data-id="${r.id}"] td:has-text("changed by the api")`);
  await api("DELETE", `/api/collections/notes/records/${r.id}`, null, adminToken);
  await page.waitForSelector(`tr[data-id="${r.id}"]`, { state: "detached" });
});

test("dashboard: auth users show verification; impersonation gives a token that works", async (page) => {
  const u = await api("POST", "/api/collections/users/records", { email: "vera@example.com", password: "vera-password-1", passwordConfirm: "vera-password-1" });
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/users");
  const row = page.locator(`tr[data-id="${u.id}"]`);
  await row.waitFor();
  assert((await row.locator('td[data-label="verified"]').textContent()) === "false", "not verified yet");
  await row.locator("text=Verify").click();
  await until("verified", async () => (await row.locator('td[data-label="verified"]').textContent()) === "true");
  await row.locator("text=Impersonate").click();
  const token = await page.locator('textarea[aria-label="token"]').inputValue();
  const me = await api("GET", `/api/collections/users/records/${u.id}`, null, token);
  assert(me.email === "vera@example.com", "the token acts as the user");
  await shot(page, "auth-users");
  await page.click("text=Close");
  await row.locator("text=Revoke tokens").click();
  await until("token revoked", async () => {
    const r = await fetch(`${URL}/api/collections/users/records/${u.id}`, { headers: { authorization: token } });
    return r.status === 404 || r.status === 401 || r.status === 403;
  });
});

test("dashboard: a record with a relation picked by search, a select and a date", async (page) => {
  const owner = await api("POST", "/api/collections/users/records", { email: "rita@example.com", password: "rita-password-1", passwordConfirm: "rita-password-1" });
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/tasks");
  await page.click("text=New record");
  await page.fill('.modal input[name="title"]', "picked owner");
  await page.selectOption('.modal select[name="status"]', "doing");
  await page.fill('.modal input[name="priority"]', "3");
  await page.fill('.modal input[name="due"]', "2030-02-03T10:30");
  await page.fill('.modal input[aria-label="search owner"]', "rita");
  await page.click(`.modal ul.picker button:has-text("rita@example.com")`);
  await page.waitForSelector(`.modal .chip:has-text("${owner.id}")`);
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector('td:has-text("picked owner")');
  const t = (await api("GET", "/api/collections/tasks/records?filter=" + encodeURIComponent('title="picked owner"'), null, adminToken)).items[0];
  assert(t.owner === owner.id && t.status === "doing" && t.priority === 3, "saved: " + JSON.stringify(t));
  assert(t.due.startsWith("2030-02-0"), "the date is kept: " + t.due);
  await shot(page, "relation-record");
});

test("dashboard: the logs page lists requests and filters them", async (page) => {
  await fetch(URL + "/api/collections/nope/records");
  await adminSignIn(page);
  await page.click("nav >> text=Logs");
  await until("log rows", async () => (await page.locator("table.logs tbody tr").count()) > 1, 10000);
  await page.selectOption('select[aria-label="status"]', "4xx");
  await until("only 4xx", async () => {
    const s = await page.locator('table.logs td[data-label="status"]').allTextContents();
    return s.length > 0 && s.every((x) => x >= "400" && x < "500");
  }, 10000);
  await page.fill('input[aria-label="log filter"]', "data.bogus ==");
  await page.click('button:has-text("Filter")');
  await page.waitForSelector("[data-error-for='filter']");
  await page.fill('input[aria-label="log filter"]', 'data.url ~ "nope"');
  await page.click('button:has-text("Filter")');
  await until("the nope request", async () => (await page.locator('table.logs td[data-label="url"]').allTextContents()).some((u) => u.includes("/nope/")));
  // A row opens with the keyboard too.
  await page.focus("table.logs tbody tr");
  await page.keyboard.press("Enter");
  await page.waitForSelector("table.logs pre");
  await shot(page, "logs");
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: the metrics page draws its charts from /metrics", async (page) => {
  await adminSignIn(page);
  await page.click("nav >> text=Metrics");
  await page.waitForSelector(".chart canvas");
  assert((await page.locator(".chart").count()) === 6, "six charts");
  const ids = await page.locator(".chart").evaluateAll((els) => els.map((e) => e.dataset.chart));
  assert(ids.join() === "requests,errors,latency,realtime,cache,refusals", "request rate, errors, latency, realtime, cache hits, refusals: " + ids);
  assert(/p50.*p95.*p99/s.test(await page.locator('[data-chart="latency"]').textContent()), "p50, p95 and p99 drawn");
  const load = setInterval(() => { fetch(URL + "/api/collections/notes/records", { headers: { authorization: adminToken } }).catch(() => {}); }, 50);
  try {
    await until("a request rate above zero", async () => {
      const t = await page.locator('[data-chart="requests"] figcaption').textContent();
      const m = t.match(/req\/s ([\d.]+)/);
      return m && Number(m[1]) > 0;
    }, 15000);
    await until("five samples", async () => Number(((await page.locator(".page-head .muted").textContent()).match(/(\d+) samples/) || [])[1]) >= 5, 20000);
    const lat = await page.locator('[data-chart="latency"] figcaption').textContent();
    assert(/p50 [\d.]+/.test(lat), "latency drawn: " + lat);
  } finally { clearInterval(load); }
  await shot(page, "metrics");
});

test("dashboard: keyboard only: sign in, create a collection, add, edit and delete a record; dialogs keep the focus and close on Escape; the focus is visible", async (page) => {
  await page.goto(URL + "/_/");
  await until("the e-mail box has the focus", () => page.evaluate(() => document.activeElement && document.activeElement.name === "email"));
  await page.keyboard.type(ADMIN.email);
  await page.keyboard.press("Tab");
  await page.keyboard.type(ADMIN.password);
  await page.keyboard.press("Enter");
  await page.waitForSelector("h1:has-text('Collections')");
  // The navigation, by Tab; the focus ring shows on what has the focus.
  await tabTo(page, focusedText, "Logs");
  const ring = await page.evaluate(() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, parseFloat(s.outlineWidth)]; });
  assert(ring[0] !== "none" && ring[1] >= 2, "a visible focus ring: " + ring);
  await page.keyboard.press("Enter");
  await page.waitForSelector("h1:has-text('Logs')");
  await tabTo(page, focusedText, "Collections", { back: true });
  await page.keyboard.press("Enter");
  await page.waitForSelector("h1:has-text('Collections')");
  // A new collection with one text field, made with the keyboard.
  await tabTo(page, focusedText, "New collection");
  await page.keyboard.press("Enter");
  await page.waitForSelector('input[name="name"]');
  await tabTo(page, () => document.activeElement.name === "name");
  await page.keyboard.type("kbnotes");
  await tabTo(page, () => document.activeElement.getAttribute("aria-label") === "field 1 name");
  await page.keyboard.type("title");
  await tabTo(page, () => document.activeElement.getAttribute("aria-label") === "List rule locked");
  await page.keyboard.press("Space"); // unlocks the list rule: everyone
  await tabTo(page, () => document.activeElement.type === "submit");
  await page.keyboard.press("Enter");
  await page.waitForSelector("h1:has-text('kbnotes')");
  // Its records: New record opens a dialog with the focus inside.
  await tabTo(page, focusedText, "Records");
  await page.keyboard.press("Enter");
  await page.waitForSelector("text=No records");
  await tabTo(page, focusedText, "New record");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".modal");
  await until("the focus is in the dialog", () => page.evaluate(inDialog));
  // Tab and Shift+Tab cycle inside the dialog, never behind it.
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    assert(await page.evaluate(inDialog), "Tab left the dialog after " + (i + 1));
  }
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Shift+Tab");
    assert(await page.evaluate(inDialog), "Shift+Tab left the dialog after " + (i + 1));
  }
  // Escape closes it, and the focus goes back to the button that opened it.
  await page.keyboard.press("Escape");
  await page.waitForSelector(".modal", { state: "detached" });
  await until("the focus is back on New record", () => page.evaluate(focusedText, "New record"));
  await page.keyboard.press("Enter");
  await page.waitForSelector(".modal");
  await tabTo(page, () => document.activeElement.name === "title", undefined, { max: 20 });
  await page.keyboard.type("typed with keys");
  await page.keyboard.press("Enter"); // submits the form
  await page.waitForSelector('td:has-text("typed with keys")');
  // Edit it.
  await tabTo(page, focusedText, "Edit");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".modal");
  await tabTo(page, () => document.activeElement.name === "title", undefined, { max: 20 });
  await page.keyboard.press("Control+A");
  await page.keyboard.type("edited with keys");
  await page.keyboard.press("Enter");
  await page.waitForSelector('td:has-text("edited with keys")');
  // Delete it: the confirmation takes the focus (Cancel first), Escape cancels.
  await tabTo(page, focusedText, "Delete");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".modal");
  // The dialog takes the focus once it is drawn (an effect after the render).
  await until("the confirmation's Cancel has the focus", () => page.evaluate(focusedText, "Cancel"));
  await page.keyboard.press("Escape");
  await page.waitForSelector(".modal", { state: "detached" });
  assert((await page.locator("tbody tr[data-id]").count()) === 1, "Escape deleted nothing");
  await until("the focus is back on Delete", () => page.evaluate(focusedText, "Delete"));
  await page.keyboard.press("Enter");
  await page.waitForSelector(".modal");
  await until("the confirmation's Cancel has the focus again", () => page.evaluate(focusedText, "Cancel"));
  await page.keyboard.press("Tab");
  assert(await page.evaluate(() => document.activeElement.dataset.testid === "confirm"), "Tab reaches the confirm button");
  await page.keyboard.press("Tab");
  assert(await page.evaluate(focusedText, "Cancel"), "and wraps to Cancel");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Enter");
  await page.waitForSelector("text=No records");
  // The collection's delete confirmation asks for its name; typed, then Enter on the button.
  await tabTo(page, focusedText, "Edit collection");
  await page.keyboard.press("Enter");
  await page.waitForSelector('input[name="name"]');
  await tabTo(page, focusedText, "Delete");
  await page.keyboard.press("Enter");
  await until("the confirmation box has the focus", () => page.evaluate(() => document.activeElement.getAttribute("aria-label") === "confirmation"));
  await page.keyboard.type("kbnotes");
  await tabTo(page, () => document.activeElement.dataset.testid === "confirm", undefined, { max: 4 });
  await page.keyboard.press("Enter");
  await page.waitForSelector("h1:has-text('Collections')");
  const r = await fetch(URL + "/api/collections/kbnotes", { headers: { authorization: adminToken } });
  assert(r.status === 404, "deleted with the keyboard");
});

test("dashboard: backups are created (named and unnamed), listed, downloaded with a file token and deleted", async (page) => {
  await adminSignIn(page);
  await page.click("nav >> text=Backups");
  await page.waitForSelector("h1:has-text('Backups')");
  await page.waitForSelector("text=No backups yet.");
  if (ON_PG) {
    // PostgreSQL is backed up with pgBackRest: the server says so, and the page shows it.
    await page.click('button:has-text("Create backup")');
    const e = await page.waitForSelector("[data-error-for='name']");
    assert((await e.textContent()).length > 10, "the server's reason shown");
    return;
  }
  await page.fill('input[name="backup-name"]', "before-upgrade.zip");
  await page.click('button:has-text("Create backup")');
  await page.waitForSelector('tr[data-key="before-upgrade.zip"]');
  await page.click('button:has-text("Create backup")');
  await until("an unnamed backup too", async () => (await page.locator("tbody tr[data-key]").count()) === 2);
  const keys = await page.locator("tbody tr[data-key]").evaluateAll((rows) => rows.map((r) => r.dataset.key));
  assert(keys.some((k) => /^pb_backup_.*\.zip$/.test(k)), "the server named one: " + keys);
  const size = await page.locator('tr[data-key="before-upgrade.zip"] td[data-label="size"]').textContent();
  assert(/\d+(\.\d)? (B|KiB|MiB)/.test(size), "size shown: " + size);
  // A bad name: the server's error under the box.
  await page.fill('input[name="backup-name"]', "../evil.zip");
  await page.click('button:has-text("Create backup")');
  await page.waitForSelector("[data-error-for='name']");
  const [dl] = await Promise.all([page.waitForEvent("download"),
    page.click('tr[data-key="before-upgrade.zip"] >> text=Download')]);
  assert(dl.url().includes("token="), "downloaded through a file token: " + dl.url());
  const path = await dl.path();
  const head = readFileSync(path).subarray(0, 2).toString();
  assert(head === "PK", "a zip archive");
  await shot(page, "backups");
  await page.click('tr[data-key="before-upgrade.zip"] >> text=Restore');
  assert(await page.isDisabled("[data-testid='confirm']"), "restore waits for the typed key");
  assert(await page.isVisible(".modal >> text=server restarts"), "the restart is announced");
  await page.click(".modal >> text=Cancel");
  await page.click('tr[data-key="before-upgrade.zip"] >> text=Delete');
  await page.click("[data-testid='confirm']");
  await until("deleted", async () => (await page.locator("tbody tr[data-key]").count()) === 1);
  const left = await api("GET", "/api/backups", null, adminToken);
  assert(left.length === 1 && left[0].key !== "before-upgrade.zip", "deleted on the server: " + JSON.stringify(left));
  // Upload the one that is left, under another name, and see it listed.
  const tok = (await api("POST", "/api/files/token", null, adminToken)).token;
  const bytes = Buffer.from(await (await fetch(`${URL}/api/backups/${left[0].key}?token=${tok}`)).arrayBuffer());
  await page.setInputFiles('input[aria-label="backup file to upload"]', { name: "uploaded.zip", mimeType: "application/zip", buffer: bytes });
  await page.waitForSelector('tr[data-key="uploaded.zip"]');
  for (const b of await api("GET", "/api/backups", null, adminToken)) await api("DELETE", `/api/backups/${b.key}`, null, adminToken);
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: settings are changed and saved (errors under the box), and persist after a reload", async (page) => {
  await adminSignIn(page);
  await page.click("nav >> text=Settings");
  await page.waitForSelector('input[name="meta.appName"]');
  await page.fill('input[name="meta.senderAddress"]', "not-an-address");
  await page.click('button:has-text("Save settings")');
  await page.waitForSelector("[data-error-for='meta.senderAddress']");
  await page.fill('input[name="meta.appName"]', "Basalt Browser Test");
  await page.fill('input[name="meta.senderAddress"]', "noreply@example.com");
  await page.fill('input[name="smtp.host"]', "smtp.example.com");
  await page.fill('input[name="smtp.port"]', "2525");
  await page.fill('input[name="smtp.username"]', "mailer");
  await page.fill('input[name="smtp.password"]', "smtp-secret-1");
  await page.click('button:has-text("Save settings")');
  await page.waitForSelector(".toast:has-text('Settings saved')");
  await shot(page, "settings");
  await page.reload();
  await page.waitForSelector('input[name="meta.appName"]');
  await until("the saved name", async () => (await page.inputValue('input[name="meta.appName"]')) === "Basalt Browser Test");
  assert((await page.inputValue('input[name="smtp.port"]')) === "2525", "port kept");
  assert((await page.inputValue('input[name="smtp.username"]')) === "mailer", "username kept");
  assert((await page.inputValue('input[name="smtp.password"]')) === "", "the stored password is never shown");
  const s = await api("GET", "/api/settings", null, adminToken);
  assert(s.meta.appName === "Basalt Browser Test" && s.smtp.host === "smtp.example.com", "saved on the server");
  assert(!JSON.stringify(s).includes("smtp-secret-1"), "the secret is not returned");
  // The test mail asks for an address; SMTP is off, so the server's reason shows.
  await page.click('button:has-text("Send a test email")');
  await page.fill('input[name="test-email"]', "someone@example.com");
  await page.click('.modal button:has-text("Send")');
  await until("an answer", async () => (await page.isVisible(".modal .banner.error")) || (await page.isVisible(".toast:has-text('Test email sent')")));
}, { expectConsoleErrors: /status of 400/ });

test("dashboard: crons are listed and one runs now", async (page) => {
  await adminSignIn(page);
  await page.click("nav >> text=Crons");
  const row = page.locator('tr[data-cron="__basaltJobsCleanup__"]');
  await row.waitFor();
  assert((await row.locator('td[data-label="expression"]').textContent()) === "0 * * * *", "the expression");
  await row.locator("text=Run now").click();
  await until("the result", async () => (await row.locator('td[data-label="result"]').textContent()).includes("✓ started"));
  await shot(page, "crons");
});

// A 1x1 PNG.
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==", "base64");
test("dashboard: files are uploaded in a record form, listed with links and a thumbnail, and removed", async (page) => {
  await api("POST", "/api/collections", { name: "docs", listRule: "", viewRule: "", fields: [
    { name: "title", type: "text" },
    { name: "attachments", type: "file", maxSelect: 5, maxSize: 1048576 },
    { name: "secret", type: "file", maxSelect: 1, protected: true }] }, adminToken);
  await adminSignIn(page);
  await page.goto(URL + "/_/#/records/docs");
  await page.waitForSelector("text=No records");
  await page.click("text=New record");
  await page.fill('.modal input[name="title"]', "with files");
  await page.setInputFiles('.modal input[aria-label="upload attachments"]', [
    { name: "pixel.png", mimeType: "image/png", buffer: PNG },
    { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello files\n") }]);
  await page.setInputFiles('.modal input[aria-label="upload secret"]', { name: "secret.txt", mimeType: "text/plain", buffer: Buffer.from("top secret\n") });
  await page.waitForSelector('.modal ul.new >> text=notes.txt');
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector('td:has-text("with files")');
  const rec = (await api("GET", "/api/collections/docs/records", null, adminToken)).items[0];
  assert(rec.attachments.length === 2 && rec.secret, "stored: " + JSON.stringify(rec));
  await page.click('tr:has-text("with files") >> text=Edit');
  const png = rec.attachments.find((n) => n.endsWith(".png")), txt = rec.attachments.find((n) => n.endsWith(".txt"));
  await page.waitForSelector(`.modal li[data-file="${png}"] img.thumb`);
  const thumb = await page.getAttribute(`.modal li[data-file="${png}"] img.thumb`, "src");
  assert(thumb.includes("thumb=100x100"), "thumbnail: " + thumb);
  await until("the thumbnail loaded", () => page.evaluate((n) => { const i = document.querySelector(`li[data-file="${n}"] img`); return i && i.complete && i.naturalWidth > 0; }, png));
  const href = await page.getAttribute(`.modal li[data-file="${txt}"] a`, "href");
  assert((await (await fetch(new globalThis.URL(href, URL))).text()) === "hello files\n", "the link serves the file");
  // The protected file's link carries a file token, and works.
  const shref = await page.getAttribute(`.modal li[data-file="${rec.secret}"] a`, "href");
  assert(shref.includes("token="), "protected link has a token: " + shref);
  assert((await (await fetch(new globalThis.URL(shref, URL))).text()) === "top secret\n", "the token opens the protected file");
  await shot(page, "record-files");
  // Remove one, add another: the field keeps the rest.
  await page.click(`.modal button[aria-label="remove ${txt}"]`);
  await page.setInputFiles('.modal input[aria-label="upload attachments"]', { name: "more.txt", mimeType: "text/plain", buffer: Buffer.from("more\n") });
  await page.click('.modal button[type="submit"]');
  await page.waitForSelector(".toast:has-text('Record saved')");
  const after = await api("GET", `/api/collections/docs/records/${rec.id}`, null, adminToken);
  assert(after.attachments.length === 2 && after.attachments.includes(png) && !after.attachments.includes(txt)
    && after.attachments.some((n) => n.startsWith("more")), "removed one, appended one: " + JSON.stringify(after.attachments));
  await page.waitForSelector(`td[data-label="attachments"]:has-text("${png}")`);
  // Remove the rest.
  await page.click('tr:has-text("with files") >> text=Edit');
  for (const n of after.attachments) await page.click(`.modal button[aria-label="remove ${n}"]`);
  await page.click('.modal button[type="submit"]');
  // The first save's toast may still show: wait for the record itself.
  const empty = await until("all attachments removed", async () => {
    const r = await api("GET", `/api/collections/docs/records/${rec.id}`, null, adminToken);
    return r.attachments.length === 0 ? r : null;
  });
  assert(empty.secret === rec.secret, "all attachments removed, the protected file kept: " + JSON.stringify(empty));
});

// ---- the task manager ----
async function signUp(page, name, email) {
  await page.goto(URL + "/");
  await page.fill('#signup input[name="name"]', name);
  await page.fill('#signup input[name="email"]', email);
  await page.fill('#signup input[name="password"]', "task-password-1");
  await page.click("#signup button");
  await page.waitForSelector("#new-task");
  // The form shows before the first list is drawn: its tasks, or the empty line.
  await page.waitForSelector("#tasks li");
  assert(!(await page.isVisible("#signin")), "the sign-in form is gone once signed in");
}
async function signIn(page, email) {
  await page.goto(URL + "/");
  await page.fill('#signin input[name="email"]', email);
  await page.fill('#signin input[name="password"]', "task-password-1");
  await page.click("#signin button");
  await page.waitForSelector("#new-task");
  // The form shows before the first list is drawn: its tasks, or the empty line.
  await page.waitForSelector("#tasks li");
  assert(!(await page.isVisible("#signup")), "the sign-up form is gone once signed in");
}
async function addTask(page, title, priority = "2", due = "") {
  await page.fill('#new-task input[name="title"]', title);
  await page.selectOption('#new-task select[name="priority"]', priority);
  if (due) await page.fill('#new-task input[name="due"]', due);
  await page.click("#new-task button");
  // The task shows, or the page says why not (then that is the failure to report).
  await page.waitForFunction((t) => [...document.querySelectorAll("#tasks li")].some((li) => li.textContent.includes(t)) ||
    document.querySelector("#task-error").textContent !== "", title);
  const said = await page.textContent("#task-error");
  assert(said === "", `adding "${title}": the page says ${said}`);
}
const stat = async (page, k) => Number(await page.locator(`[data-stat="${k}"] b`).textContent());
const titles = (page) => page.locator("#tasks li[data-id] .title").allTextContents();

test("tasks: sign-up, add, change status, rename, delete; statistics follow", async (page) => {
  await signUp(page, "Ann", "ann@example.com");
  await addTask(page, "water plants", "1", "2030-01-05T12:00");
  await addTask(page, "pay rent", "3", "2030-01-01T09:30");
  await addTask(page, "read book", "2");
  assert((await stat(page, "all")) === 3 && (await stat(page, "todo")) === 3, "three todo");
  await page.selectOption('select[aria-label="status of pay rent"]', "done");
  await until("one done", async () => (await stat(page, "done")) === 1 && (await stat(page, "todo")) === 2);
  await page.selectOption('select[aria-label="status of read book"]', "doing");
  await until("one doing", async () => (await stat(page, "doing")) === 1);
  page.once("dialog", (d) => d.accept("read two books"));
  await page.click('button[aria-label="rename read book"]');
  await page.waitForSelector('#tasks li:has-text("read two books")');
  await shot(page, "tasks");
  await addTask(page, "temporary");
  await page.click('button[aria-label="delete temporary"]');
  await until("deleted", async () => !(await titles(page)).includes("temporary"));
  assert((await stat(page, "all")) === 3, "three again");
  await page.click("#signout");
  await page.waitForSelector("#signin");
  assert(!(await page.isVisible("#new-task")), "signed out: no tasks shown");
});

test("tasks: filters and sort", async (page) => {
  await signIn(page, "ann@example.com");
  await page.selectOption('#filters select[name="status"]', "todo");
  await until("only todo", async () => JSON.stringify(await titles(page)) === JSON.stringify(["water plants"]));
  await page.selectOption('#filters select[name="status"]', "");
  await page.selectOption('#filters select[name="sort"]', "-priority");
  await until("high first", async () => (await titles(page))[0] === "pay rent");
  await page.selectOption('#filters select[name="sort"]', "due");
  await until("by due date", async () => JSON.stringify(await titles(page)) === JSON.stringify(["read two books", "pay rent", "water plants"]));
  await page.fill('#filters input[name="q"]', "plant");
  await until("search", async () => JSON.stringify(await titles(page)) === JSON.stringify(["water plants"]));
  await page.selectOption('#filters select[name="priority"]', "3");
  await until("nothing matches", async () => (await page.locator("#tasks li.empty").count()) === 1);
});

test("tasks: an older, slower answer never replaces a newer list", async (page) => {
  await signIn(page, "ann@example.com");
  const all = (await titles(page)).length;
  assert(all > 1, "Ann has several tasks");
  // The answer to the "todo" filter is held back 1.5 s; the one to the next choice
  // ("any status") comes at once and must be what stays drawn.
  let held = false;
  await page.route("**/api/collections/tasks/records?**", async (route) => {
    if (!held && decodeURIComponent(route.request().url()).includes("todo")) {
      held = true;
      await new Promise((r) => setTimeout(r, 1500));
    }
    await route.continue();
  });
  await page.selectOption('#filters select[name="status"]', "todo");
  await page.selectOption('#filters select[name="status"]', "");
  await until("the answer held back came", async () => held);
  await new Promise((r) => setTimeout(r, 2500));
  assert((await titles(page)).length === all, `every task still shown: ${JSON.stringify(await titles(page))}`);
  await page.unroute("**/api/collections/tasks/records?**");
});

test("tasks: a change in one window shows in the second", async (page, errors) => {
  await signIn(page, "ann@example.com");
  const second = await newPage(errors);
  await signIn(second, "ann@example.com");
  await second.waitForSelector("#live:has-text('Live')");
  await addTask(page, "from window one");
  await second.waitForSelector('#tasks li:has-text("from window one")');
  await page.selectOption('select[aria-label="status of from window one"]', "done");
  await until("status in window two", async () => (await second.locator('select[aria-label="status of from window one"]').inputValue()) === "done");
  await shot(second, "tasks-second-window");
  await second.context().close();
});

test("tasks: two users each see only their own tasks", async (page, errors) => {
  await signUp(page, "Bob", "bob@example.com");
  assert((await titles(page)).length === 0, "Bob starts empty");
  await addTask(page, "bob's secret");
  const ann = await newPage(errors);
  await signIn(ann, "ann@example.com");
  const annTitles = await titles(ann);
  assert(annTitles.length > 0 && !annTitles.includes("bob's secret"), "Ann does not see Bob's task");
  assert(!(await titles(page)).some((t) => annTitles.includes(t)), "Bob does not see Ann's tasks");
  // The statistics count each one's own tasks only.
  await page.reload();
  await page.waitForSelector("#tasks li[data-id]");
  assert((await stat(page, "all")) === 1 && (await stat(page, "todo")) === 1, "Bob's statistics: his one task");
  assert((await stat(ann, "all")) === annTitles.length, "Ann's statistics: her tasks");
  // And the API agrees, whatever the page does: Bob cannot read or take over Ann's task.
  const bobToken = await page.evaluate(() => JSON.parse(localStorage.getItem("pocketbase_auth")).token);
  const annTask = (await api("GET", "/api/collections/tasks/records?filter=" + encodeURIComponent('title="pay rent"'), null, adminToken)).items[0];
  const r = await fetch(`${URL}/api/collections/tasks/records/${annTask.id}`, { headers: { authorization: bobToken } });
  assert(r.status === 404, "Bob gets 404 for Ann's task");
  await ann.context().close();
});

// The mails the SMTP fixture received (files of mailDir), as text.
function mails() {
  let names = [];
  try { names = readdirSync(mailDir).filter((n) => n.endsWith(".eml")); } catch { /* none yet */ }
  return names.map((n) => readFileSync(join(mailDir, n), "latin1"));
}
// The readable text of a mail: base64 and quoted-printable parts decoded.
function mailText(raw) {
  let out = raw.replace(/=\?UTF-8\?B\?([A-Za-z0-9+/=]+)\?=/gi, (_, b) => Buffer.from(b, "base64").toString("utf8"));
  out = out.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  for (const m of raw.matchAll(/Content-Transfer-Encoding: base64\r?\n(?:[^\r\n]+\r?\n)*\r?\n([A-Za-z0-9+/=\r\n]+)/gi))
    out += "\n" + Buffer.from(m[1].replace(/\s+/g, ""), "base64").toString("utf8");
  return out;
}

test("tasks: a task due within a day has its reminder mailed to its owner; a later one's reminder is scheduled a day before", async (page) => {
  // The settings point at the test's SMTP server (the settings test pointed them elsewhere).
  await api("PATCH", "/api/settings", { meta: { senderAddress: "noreply@example.com" },
    smtp: { enabled: true, host: "127.0.0.1", port: smtpPort, username: "", password: "", tls: false } }, adminToken);
  const tasksColl = await api("GET", "/api/collections/tasks", null, adminToken);
  assert(JSON.stringify(tasksColl.reminders) === JSON.stringify([{ field: "due", before: "1d", mail: "owner", text: "title" }]),
    "the example's schema sets the reminder up: " + JSON.stringify(tasksColl.reminders));
  await signIn(page, "ann@example.com");
  // Two hours from now, in the browser's local time (what the date-time box takes).
  const soon = await page.evaluate(() => { const d = new Date(Date.now() + 2 * 3600e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); });
  await addTask(page, "renew passport", "3", soon);
  await addTask(page, "plan the summer", "1", "2030-06-01T09:00");
  const ann = (await api("GET", "/api/collections/users/records?filter=" + encodeURIComponent('email="ann@example.com"'), null, adminToken)).items[0];
  const mail = await until("the reminder mail", () => mails().find((m) => m.includes("X-Rcpt-To: ann@example.com") && mailText(m).includes("renew passport")));
  assert(/Subject: .*Reminder/i.test(mailText(mail)), "a reminder: " + mail.slice(0, 400));
  // The later one waits in the jobs queue until a day before it is due.
  const later = (await api("GET", "/api/collections/tasks/records?filter=" + encodeURIComponent('title="plan the summer"'), null, adminToken)).items[0];
  assert(later.owner === ann.id, "Ann's task");
  const jobs = (await api("GET", "/api/basalt/jobs?state=ready", null, adminToken)).items;
  const job = jobs.find((j) => j.name === "reminder.send" && j.payload && j.payload.record === later.id);
  assert(job, "a reminder job for the later task: " + JSON.stringify(jobs.map((j) => [j.name, j.payload])));
  const due = Date.parse(later.due.replace(" ", "T"));
  assert(job.runAt === due - 86400e3, `it runs a day before: ${job.runAt} vs ${due - 86400e3}`);
  assert(!mails().some((m) => mailText(m).includes("plan the summer")), "not mailed yet");
  await shot(page, "tasks-reminders");
});

test("tasks and dashboard: after the server restarts, windows reconnect and show what changed while they were away", async (page, errors) => {
  await signIn(page, "ann@example.com");
  await page.waitForSelector("#live:has-text('Live')");
  const dash = await newPage(errors);
  await adminSignIn(dash);
  await dash.goto(URL + "/_/#/records/notes");
  await dash.waitForSelector(".live.on");
  const annToken = (await api("POST", "/api/collections/users/auth-with-password", { identity: "ann@example.com", password: "task-password-1" })).token;
  const annId = (await api("GET", "/api/collections/users/records", null, annToken)).items[0].id;
  assert((await stopServer()) === 0, "a clean stop");
  await page.waitForSelector("#live:has-text('Reconnecting')");
  await dash.waitForSelector(".live:not(.on)");
  startServer();
  await waitHealthy();
  // At once, before the pages' SDK has reconnected (it waits between attempts): no
  // event reaches them for these; the reconnection must catch them up.
  await api("POST", "/api/collections/tasks/records", { title: "made during the reconnect", status: "todo", priority: 2, owner: annId }, annToken);
  const note = await api("POST", "/api/collections/notes/records", { title: "note during the reconnect", kind: "idea" }, adminToken);
  await page.waitForSelector('#tasks li:has-text("made during the reconnect")');
  await dash.waitForSelector(`tr[data-id="${note.id}"]`);
  // And live events flow again on the new connection.
  await api("POST", "/api/collections/tasks/records", { title: "made after the reconnect", status: "todo", priority: 2, owner: annId }, annToken);
  await api("PATCH", `/api/collections/notes/records/${note.id}`, { title: "note after the reconnect" }, adminToken);
  await page.waitForSelector('#tasks li:has-text("made after the reconnect")');
  await dash.waitForSelector(`tr[data-id="${note.id}"] td:has-text("note after the reconnect")`);
  await page.waitForSelector("#live:has-text('Live')");
  await dash.context().close();
}, { expectConsoleErrors: /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING|status of 50[23]/ });

const PAGES = [["#/collections", "Collections"], ["#/collections/notes/edit", "notes"], ["#/records/notes", "notes"],
  ["#/records/users", "users"], ["#/logs", "Logs"], ["#/metrics", "Metrics"], ["#/backups", "Backups"], ["#/crons", "Crons"], ["#/settings", "Settings"]];

test("dashboard and task manager at phone width (375x667): no page scrolls sideways, the navigation opens from the menu", async (page) => {
  await adminSignIn(page);
  for (const [hash, h1] of PAGES) {
    await page.goto(URL + "/_/" + hash);
    await page.waitForSelector(`h1:has-text("${h1}")`);
    await page.waitForSelector(".muted:has-text('Loading')", { state: "detached" }).catch(() => {});
    const o = await overflow(page);
    assert(o <= 0, `${hash} scrolls sideways by ${o} px: ${await sticksOut(page)}`);
  }
  await page.goto(URL + "/_/#/records/notes");
  await page.waitForSelector("tbody tr[data-id]");
  assert(await page.isVisible("button.menu"), "menu button shown");
  assert(!(await page.isVisible("nav[aria-label=Sections] a")), "navigation folded");
  await shot(page, "phone-records");
  await page.click("button.menu");
  await until("the menu says it is open", async () => (await page.getAttribute("button.menu", "aria-expanded")) === "true");
  await page.click("nav[aria-label=Sections] >> text=Logs");
  await page.waitForSelector("h1:has-text('Logs')");
  // The menu folds in the render that follows the navigation.
  await until("navigation folds again after a choice", async () => !(await page.isVisible("nav[aria-label=Sections] a")));
  // A record form fits too.
  await page.goto(URL + "/_/#/records/tasks");
  await page.click("text=New record");
  await page.waitForSelector(".modal");
  assert((await overflow(page)) <= 0, "the record form scrolls sideways");
  await page.evaluate(() => document.querySelector(".modal").scrollIntoView());
  const box = await page.locator(".modal").boundingBox();
  assert(box.x >= 0 && box.x + box.width <= 375, "the dialog fits the width: " + JSON.stringify(box));
  await shot(page, "phone-record-form");
  await page.keyboard.press("Escape");
  // The task manager.
  await signIn(page, "ann@example.com");
  assert((await overflow(page)) <= 0, "the task manager scrolls sideways");
  await shot(page, "phone-tasks");
}, { viewport: { width: 375, height: 667 } });

test("dashboard and task manager: every control on every page has a label", async (page) => {
  await adminSignIn(page);
  const missing = [];
  for (const [hash, h1] of PAGES) {
    await page.goto(URL + "/_/" + hash);
    await page.waitForSelector(`h1:has-text("${h1}")`);
    await page.waitForSelector(".muted:has-text('Loading')", { state: "detached" }).catch(() => {});
    for (const m of await unlabeled(page)) missing.push(`${hash}: ${m}`);
  }
  // The record forms: every field type (tasks: text, select, number, date, relation;
  // notes: json; docs: files; users: auth fields).
  for (const c of ["tasks", "notes", "docs", "users"]) {
    await page.goto(URL + "/_/#/records/" + c);
    await page.click("text=New record");
    await page.waitForSelector(".modal");
    for (const m of await unlabeled(page)) missing.push(`record form of ${c}: ${m}`);
    await page.keyboard.press("Escape");
    // Closed before the next page: the hash changes within this page, and a dialog
    // still open there covers its "New record".
    await page.waitForSelector(".modal", { state: "detached" });
  }
  await page.goto(URL + "/_/#/collections/new/edit");
  await page.waitForSelector('input[name="name"]');
  for (const t of ["text", "number", "select", "relation", "json", "date", "autodate"]) {
    await page.click("text=Add field");
    const n = await page.locator(".field-row[data-field]").count();
    await page.selectOption(`select[aria-label="field ${n} type"]`, t);
  }
  for (const m of await unlabeled(page)) missing.push(`collection editor: ${m}`);
  await page.goto(URL + "/");
  await page.waitForSelector("#signin");
  for (const m of await unlabeled(page)) missing.push(`task manager sign-in: ${m}`);
  await signIn(page, "ann@example.com");
  for (const m of await unlabeled(page)) missing.push(`task manager: ${m}`);
  assert(missing.length === 0, "controls without a label:\n  " + missing.join("\n  "));
});

// Last: the server restarts (re-executes itself) on a restore; nothing after it
// depends on what it was before.
test("dashboard: a backup is restored after typing its key; the server restarts with the data of the backup, and a second window follows", async (page, errors) => {
  if (ON_PG) return; // the API restore is SQLite's (PostgreSQL: pgBackRest)
  await api("POST", "/api/collections", { name: "restorecheck", fields: [{ name: "title", type: "text" }] }, adminToken);
  const kept = await api("POST", "/api/collections/restorecheck/records", { title: "made before the backup" }, adminToken);
  await api("POST", "/api/backups", { name: "restore-me.zip" }, adminToken);
  const later = await api("POST", "/api/collections/restorecheck/records", { title: "made after the backup" }, adminToken);
  // A second window on the collection's records, open across the restart.
  const watcher = await newPage(errors);
  await adminSignIn(watcher);
  await watcher.goto(URL + "/_/#/records/restorecheck");
  await watcher.waitForSelector(`tr[data-id="${later.id}"]`);
  await watcher.waitForSelector(".live.on");
  await adminSignIn(page);
  await page.click("nav >> text=Backups");
  await page.click('tr[data-key="restore-me.zip"] >> button:has-text("Restore")');
  await page.waitForSelector(".modal >> text=server restarts");
  await page.fill('.modal input[aria-label="confirmation"]', "restore-me.zip");
  await page.click("[data-testid='confirm']");
  await page.waitForSelector(".toast:has-text('The server is back')", { timeout: 60000 });
  const r = await fetch(`${URL}/api/collections/restorecheck/records/${later.id}`, { headers: { authorization: adminToken } });
  assert(r.status === 404, "the record made after the backup is gone: " + r.status);
  assert((await api("GET", `/api/collections/restorecheck/records/${kept.id}`, null, adminToken)).title === "made before the backup", "the one before is there");
  await page.waitForSelector('tr[data-key="restore-me.zip"]');
  await shot(page, "backups-restored");
  // The second window reconnected by itself: it shows the restored data (the later
  // record gone) and a record made now arrives live.
  await watcher.waitForSelector(`tr[data-id="${later.id}"]`, { state: "detached" });
  const fresh = await api("POST", "/api/collections/restorecheck/records", { title: "made after the restore" }, adminToken);
  await watcher.waitForSelector(`tr[data-id="${fresh.id}"]`);
  await watcher.context().close();
  await api("DELETE", "/api/backups/restore-me.zip", null, adminToken);
}, { expectConsoleErrors: /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|status of 50[23]/ });

// ---- run ----
let passed = 0, failed = 0;
// BROWSER_ONLY=regex runs the matching tests only (they may depend on earlier ones).
const only = process.env.BROWSER_ONLY ? new RegExp(process.env.BROWSER_ONLY) : null;
for (const t of tests) {
  if (only && !only.test(t.name)) continue;
  const errors = [];
  const page = await newPage(errors, t.opts || {});
  const t0 = Date.now();
  try {
    await t.fn(page, errors);
    // Failed requests the test provokes on purpose (a 400 for a bad filter) are the
    // browser's own console lines; anything else is an error of the page.
    const real = errors.filter((e) => !(t.opts && t.opts.expectConsoleErrors && t.opts.expectConsoleErrors.test(e)));
    if (real.length) throw new Error("browser errors:\n  " + real.join("\n  "));
    passed++;
    console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name}\n     ${e.message.split("\n").join("\n     ")}`);
    // What the server said went wrong meanwhile, if anything (its warnings and errors).
    const said = serverLog.split("\n").filter((l) => /"level":"(warn|error)"/.test(l)).slice(-10);
    if (said.length) console.log("     server: " + said.join("\n     server: "));
    // And its last requests with their times, from its request log (a slow write and a
    // stale read look alike from the page).
    try {
      const last = await api("GET", "/api/logs?sort=-created&perPage=12", null, adminToken);
      for (const l of last.items.reverse())
        console.log(`     request: ${l.created} ${l.data.method} ${l.data.url} ${l.data.status} ${l.data.execTime} ms`);
    } catch { /* no request log to show */ }
    await page.screenshot({ path: join(SHOTS, "FAILED-" + t.name.replace(/[^a-z0-9]+/gi, "-") + ".png") }).catch(() => {});
  } finally {
    await page.context().close().catch(() => {});
  }
}
await browser.close();
const code = await stopServer();
smtp.kill("SIGTERM");
// A clean stop; under ASan a leak or a memory error makes it non-zero.
if (code !== 0) {
  failed++;
  console.log(`FAIL the server exited with ${code}\n${serverLog.split("\n").filter((l) => !l.includes('"access"')).slice(-30).join("\n")}`);
}
if (process.env.BASALT_KEEP_TMP) { writeFileSync(join(dir, "server.log"), serverLog); console.log(`kept ${dir}`); }
else rmSync(dir, { recursive: true, force: true });
console.log(`screenshots in ${SHOTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
