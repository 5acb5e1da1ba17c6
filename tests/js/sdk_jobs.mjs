// The official PocketBase JS SDK against Basalt's mail flows, crons and settings,
// with an SMTP server this script starts (tests/integration/smtp_fixture.py, on a
// free port, stopped by PID): sign-up -> requestVerification -> confirmVerification
// -> requestPasswordReset -> confirmPasswordReset -> requestOTP -> authWithOTP,
// pb.crons.getFullList / run, pb.settings.getAll / update. Prints "N passed, N failed".
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import PocketBase from "pocketbase";

const BIN = process.env.BASALT_BIN || new URL("../../build/basalt", import.meta.url).pathname;
const FIXTURE = new URL("../integration/smtp_fixture.py", import.meta.url).pathname;
let passed = 0, failed = 0;

function check(name, cond, detail) {
  if (cond) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail !== undefined ? ": " + JSON.stringify(detail) : ""}`); }
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitHealthy(url) {
  for (let i = 0; i < 200; i++) {
    try { if ((await fetch(url + "/api/health")).ok) return; } catch {}
    await sleep(50);
  }
  throw new Error("server did not start");
}

// The decoded HTML bodies of the mails to `to`, oldest first.
function mailsTo(dir, to) {
  return readdirSync(dir).filter((f) => f.endsWith(".eml")).sort().map((f) => readFileSync(join(dir, f), "latin1"))
    .filter((raw) => raw.split("\r\n")[0].includes(to))
    .map((raw) => Buffer.from(raw.split("\r\n\r\n").slice(1).join("").replace(/\s+/g, ""), "base64").toString("utf8"));
}

async function waitMail(dir, to, n) {
  for (let i = 0; i < 200; i++) {
    const m = mailsTo(dir, to);
    if (m.length >= n) return m[n - 1];
    await sleep(100);
  }
  throw new Error(`no mail #${n} to ${to}`);
}

const dir = mkdtempSync(join(tmpdir(), "basalt-js-jobs-"));
const mailDir = join(dir, "mail");
const db = process.env.BASALT_TEST_DB ? [`--db=${process.env.BASALT_TEST_DB}`] : [];
if (process.env.BASALT_TEST_DB_LISTEN) db.push(`--db-listen=${process.env.BASALT_TEST_DB_LISTEN}`);
const su = spawnSync(BIN, ["superuser", "upsert", "admin@example.com", "admin-password-1", `--dir=${dir}`, ...db]);
if (su.status !== 0) { console.error(su.stderr.toString()); process.exit(1); }
const smtpPort = await freePort();
const smtp = spawn("/usr/bin/python3", [FIXTURE, String(smtpPort), mailDir], { stdio: ["ignore", "pipe", "ignore"] });
await new Promise((resolve, reject) => {
  smtp.stdout.once("data", (d) => (String(d).includes("ready") ? resolve() : reject(new Error("smtp fixture"))));
  smtp.once("exit", () => reject(new Error("smtp fixture exited")));
});
const port = await freePort();
const server = spawn(BIN, ["serve", `--http=127.0.0.1:${port}`, `--dir=${dir}`, ...db, "--rate-limit-anon=0",
  "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0", "--mail-rate-limit=0",
  "--mail-rate-limit-ip=0", "--jobs-poll-ms=50", "--smtp-enabled=1", "--smtp-host=127.0.0.1",
  `--smtp-port=${smtpPort}`, "--mail-sender-address=noreply@example.com"], { stdio: "ignore" });
const url = `http://127.0.0.1:${port}`;

try {
  await waitHealthy(url);
  const admin = new PocketBase(url);
  admin.autoCancellation(false);
  await admin.collection("_superusers").authWithPassword("admin@example.com", "admin-password-1");
  await admin.collections.update("users", { createRule: "", viewRule: "id = @request.auth.id" });

  const pb = new PocketBase(url);
  pb.autoCancellation(false);
  const email = "sdk@example.com";
  const user = await pb.collection("users").create({ email, password: "password-123", passwordConfirm: "password-123" });
  check("sign-up", typeof user.id === "string" && user.verified === false, user);

  check("requestVerification", (await pb.collection("users").requestVerification(email)) === true);
  const vtok = /confirm-verification\/([\w.-]+)/.exec(await waitMail(mailDir, email, 1))?.[1];
  check("verification mail has a token", !!vtok);
  check("confirmVerification", (await pb.collection("users").confirmVerification(vtok)) === true);
  check("record verified", (await admin.collection("users").getOne(user.id)).verified === true);

  check("requestPasswordReset", (await pb.collection("users").requestPasswordReset(email)) === true);
  const rtok = /confirm-password-reset\/([\w.-]+)/.exec(await waitMail(mailDir, email, 2))?.[1];
  check("reset mail has a token", !!rtok);
  check("confirmPasswordReset",
    (await pb.collection("users").confirmPasswordReset(rtok, "new-password-9", "new-password-9")) === true);
  const login = await pb.collection("users").authWithPassword(email, "new-password-9");
  check("login with the new password", login.record.id === user.id);
  pb.authStore.clear();

  const otp = await pb.collection("users").requestOTP(email);
  check("requestOTP gives an otpId", typeof otp.otpId === "string" && otp.otpId.length > 0, otp);
  const code = /<strong>(\d{8})<\/strong>/.exec(await waitMail(mailDir, email, 3))?.[1];
  check("OTP mail has a code", !!code);
  const o = await pb.collection("users").authWithOTP(otp.otpId, code);
  check("authWithOTP", pb.authStore.isValid && o.record.id === user.id, o.record);
  try { await pb.collection("users").requestOTP("nobody@example.com").then((r) => check("no enumeration", !!r.otpId)); }
  catch (e) { check("no enumeration", false, e.response); }

  const crons = await admin.crons.getFullList();
  check("crons.getFullList", crons.some((c) => c.id === "__basaltJobsCleanup__" && c.expression === "0 * * * *"), crons);
  check("crons.run", (await admin.crons.run("__basaltJobsCleanup__")) === true);
  try { await admin.crons.run("missing"); check("crons.run unknown is 404", false); }
  catch (e) { check("crons.run unknown is 404", e.status === 404, e.status); }

  const s = await admin.settings.getAll();
  check("settings.getAll", s.smtp?.enabled === true && s.smtp.password === undefined && s.meta?.appName === "Basalt", s);
  const u = await admin.settings.update({ meta: { appName: "SDK app" }, smtp: { password: "hidden" } });
  check("settings.update", u.meta.appName === "SDK app" && u.smtp.password === undefined, u);
  check("settings persisted", (await admin.settings.getAll()).meta.appName === "SDK app");
  check("settings.testEmail", (await admin.settings.testEmail("users", "t@example.com", "verification")) === true);
  try { await pb.settings.getAll(); check("settings need a superuser", false); }
  catch (e) { check("settings need a superuser", e.status === 403 || e.status === 401, e.status); }
} catch (e) {
  failed++;
  console.log(`FAIL unexpected: ${e.stack || e} ${JSON.stringify(e.response || "")}`);
} finally {
  server.kill("SIGTERM");
  smtp.kill("SIGTERM");
  await sleep(300);
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
