// pb.backups from the official PocketBase JS SDK against a real Basalt server (SQLite):
// getFullList, create, getDownloadURL with pb.files.getToken, upload, delete, and the
// refusals for a non-superuser. Prints "N passed, N failed".
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import PocketBase from "pocketbase";

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

const dir = mkdtempSync(join(tmpdir(), "basalt-js-backups-"));
const su = spawnSync(BIN, ["superuser", "upsert", "admin@example.com", "admin-password-1", `--dir=${dir}`]);
if (su.status !== 0) { console.error(su.stderr.toString()); process.exit(1); }
const port = await freePort();
const server = spawn(BIN, ["serve", `--http=127.0.0.1:${port}`, `--dir=${dir}`, "--rate-limit-anon=0",
  "--rate-limit-user=0", "--rate-limit-burst=0", "--rate-limit-auth=0"], { stdio: "ignore" });
const url = `http://127.0.0.1:${port}`;

try {
  await waitHealthy(url);
  const pb = new PocketBase(url);
  pb.autoCancellation(false);
  await pb.collection("_superusers").authWithPassword("admin@example.com", "admin-password-1");

  check("empty list", (await pb.backups.getFullList()).length === 0);
  await pb.backups.create("sdk_one.zip");
  await pb.backups.create("");
  const list = await pb.backups.getFullList();
  check("list after create", list.length === 2 && list.some((b) => b.key === "sdk_one.zip"), list);
  check("list shape", list.every((b) => typeof b.key === "string" && b.size > 0 && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$/.test(b.modified)), list);
  await expectError("duplicate name refused", pb.backups.create("sdk_one.zip"), 400);
  await expectError("invalid name refused", pb.backups.create("Bad Name.zip"), 400);

  const token = await pb.files.getToken();
  check("file token", typeof token === "string" && token.split(".").length === 3);
  const dl = pb.backups.getDownloadURL(token, "sdk_one.zip");
  check("download url", dl.startsWith(url + "/api/backups/sdk_one.zip?") && dl.includes("token="), dl);
  const res = await fetch(dl);
  const bytes = new Uint8Array(await res.arrayBuffer());
  check("download", res.status === 200 && bytes[0] === 0x50 && bytes[1] === 0x4b, res.status);
  const noTok = await fetch(url + "/api/backups/sdk_one.zip");
  check("download without token refused", noTok.status === 403, noTok.status);

  // The SDK sends the multipart field "file"; the key is the File's name.
  await pb.backups.upload({ file: new File([bytes], "sdk_uploaded.zip", { type: "application/zip" }) });
  check("upload", (await pb.backups.getFullList()).some((b) => b.key === "sdk_uploaded.zip"));

  await pb.backups.delete("sdk_uploaded.zip");
  check("delete", !(await pb.backups.getFullList()).some((b) => b.key === "sdk_uploaded.zip"));
  await expectError("delete missing", pb.backups.delete("sdk_uploaded.zip"), 404);

  // A user is refused everything.
  await pb.collections.create({ name: "members", type: "auth", createRule: "", fields: [] });
  const anon = new PocketBase(url);
  anon.autoCancellation(false);
  await anon.collection("members").create({ email: "m@example.com", password: "member-pass-1", passwordConfirm: "member-pass-1" });
  await anon.collection("members").authWithPassword("m@example.com", "member-pass-1");
  await expectError("user list refused", anon.backups.getFullList(), 403);
  await expectError("user create refused", anon.backups.create("x.zip"), 403);
  await expectError("user delete refused", anon.backups.delete("sdk_one.zip"), 403);
  // Any signed-in record gets file tokens (for its protected files), but a user's
  // token opens no backup.
  const userToken = await anon.files.getToken();
  const userDl = await fetch(anon.backups.getDownloadURL(userToken, "sdk_one.zip"));
  check("user file token opens no backup", userDl.status === 403, userDl.status);
  anon.authStore.clear();
  await expectError("anonymous list refused", anon.backups.getFullList(), 401);
} catch (e) {
  failed++;
  console.log("FAIL unexpected error:", e?.status, JSON.stringify(e?.response ?? String(e)));
} finally {
  server.kill("SIGTERM");
  await new Promise((r) => server.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
