// The official PocketBase JS SDK with file fields against a real Basalt server:
// uploads with FormData and with plain objects holding File/Blob values (the SDK
// turns those into multipart itself), appending with "field+", batch uploads, files
// and thumbnails read back through pb.files.getURL, a protected file through
// pb.files.getToken. Prints "N passed, N failed".
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import PocketBase from "pocketbase";

const BIN = process.env.BASALT_BIN || new URL("../../build/basalt", import.meta.url).pathname;
let passed = 0, failed = 0;

function check(name, cond, detail) {
  if (cond) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail !== undefined ? ": " + JSON.stringify(detail) : ""}`); }
}

function crc32(buf) {
  let c = ~0;
  for (const b of buf) { c ^= b; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1)); }
  return ~c >>> 0;
}

// A w x h RGB PNG, made here so the test needs nothing else.
function png(w, h) {
  const chunk = (type, data) => {
    const t = Buffer.concat([Buffer.from(type), data]);
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(t));
    return Buffer.concat([len, t, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(w * 3, 0x7f)]);
  const raw = Buffer.concat(Array.from({ length: h }, () => row));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

const pngSize = (b) => [b.readUInt32BE(16), b.readUInt32BE(20)];

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

const dir = mkdtempSync(join(tmpdir(), "basalt-js-files-"));
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
  const admin = new PocketBase(url);
  admin.autoCancellation(false);
  await admin.collection("_superusers").authWithPassword("admin@example.com", "admin-password-1");
  const users = await admin.collections.create({
    name: "members", type: "auth", createRule: "", viewRule: "id = @request.auth.id", fields: [] });
  await admin.collections.create({
    name: "photos", listRule: "", viewRule: "", createRule: "", updateRule: "",
    fields: [
      { name: "title", type: "text" },
      { name: "image", type: "file", maxSelect: 1, mimeTypes: ["image/png", "image/jpeg"], thumbs: ["50x50", "0x20"] },
      { name: "attachments", type: "file", maxSelect: 5 },
    ],
  });
  await admin.collections.create({
    name: "vault", viewRule: "owner = @request.auth.id", createRule: "owner = @request.auth.id",
    fields: [
      { name: "owner", type: "relation", collectionId: users.id, maxSelect: 1 },
      { name: "paper", type: "file", maxSelect: 1, protected: true },
    ],
  });
  const image = png(120, 80);

  // 1. FormData, as a browser form would send it.
  const fd = new FormData();
  fd.append("title", "from FormData");
  fd.append("image", new Blob([image], { type: "image/png" }), "Holiday Photo.png");
  const r1 = await admin.collection("photos").create(fd);
  check("FormData upload names the file PocketBase's way", /^holiday_photo_[a-z0-9]{10}\.png$/.test(r1.image), r1);
  const back = Buffer.from(await (await fetch(admin.files.getURL(r1, r1.image))).arrayBuffer());
  check("the file reads back byte for byte", back.equals(image), back.length);
  const thumbRes = await fetch(admin.files.getURL(r1, r1.image, { thumb: "50x50" }));
  const thumb = Buffer.from(await thumbRes.arrayBuffer());
  check("a listed thumbnail is 50x50", thumbRes.status === 200 && pngSize(thumb).join("x") === "50x50", pngSize(thumb));
  const t2 = Buffer.from(await (await fetch(admin.files.getURL(r1, r1.image, { thumb: "0x20" }))).arrayBuffer());
  check("0x20 keeps the ratio", pngSize(t2).join("x") === "30x20", pngSize(t2));
  const dl = await fetch(admin.files.getURL(r1, r1.image, { download: true }));
  check("download=1 is an attachment", (dl.headers.get("content-disposition") || "").startsWith("attachment"));

  // 2. A plain object holding File and Blob values: the SDK builds the multipart body.
  const r2 = await admin.collection("photos").create({
    title: "from an object",
    image: new File([image], "cover.png", { type: "image/png" }),
    attachments: [new File(["first notes"], "notes.txt", { type: "text/plain" }), new Blob(["blob body"])],
  });
  check("object upload: single and multiple fields", r2.image.startsWith("cover_") && r2.attachments.length === 2, r2);
  const txt = await (await fetch(admin.files.getURL(r2, r2.attachments[0]))).text();
  check("object upload: the text file reads back", txt === "first notes", txt);

  // 3. Appending with the field+ modifier keeps the existing files.
  const r3 = await admin.collection("photos").update(r2.id, { "attachments+": new File(["third"], "third.txt") });
  check("attachments+ appends", r3.attachments.length === 3 && r3.attachments[0] === r2.attachments[0], r3.attachments);
  const r4 = await admin.collection("photos").update(r2.id, { "attachments-": [r2.attachments[0]] });
  check("attachments- removes by name", r4.attachments.length === 2 && !r4.attachments.includes(r2.attachments[0]));
  const gone = await fetch(admin.files.getURL(r2, r2.attachments[0]));
  check("a removed file is no longer served", gone.status === 404, gone.status);

  // 4. The sniffed type decides, not the one the client claims.
  try {
    await admin.collection("photos").create({ image: new File(["not an image"], "fake.png", { type: "image/png" }) });
    check("text claimed as PNG is refused", false);
  } catch (e) {
    check("text claimed as PNG is refused", e.status === 400 && e.response?.data?.image?.code === "validation_invalid_mime_type", e.response);
  }

  // 5. Files in a batch.
  const batch = admin.createBatch();
  batch.collection("photos").create({ title: "batch 1", image: new File([image], "batch1.png", { type: "image/png" }) });
  batch.collection("photos").create({ title: "batch 2", attachments: [new File(["x"], "bx.txt")] });
  const res = await batch.send();
  check("batch uploads", res.length === 2 && res[0].body.image.startsWith("batch1_") && res[1].body.attachments.length === 1, res);

  // 6. A protected file needs a file token, checked against the view rule.
  const user = new PocketBase(url);
  user.autoCancellation(false);
  await user.collection("members").create({ email: "m@example.com", password: "password-123", passwordConfirm: "password-123" });
  await user.collection("members").authWithPassword("m@example.com", "password-123");
  const v = await user.collection("vault").create({ owner: user.authStore.record.id, paper: new File(["top secret"], "paper.txt") });
  const plain = await fetch(user.files.getURL(v, v.paper));
  check("protected file without a token: 404", plain.status === 404, plain.status);
  const token = await user.files.getToken();
  const withTok = await fetch(user.files.getURL(v, v.paper, { token }));
  check("protected file with pb.files.getToken()", withTok.status === 200 && (await withTok.text()) === "top secret");
  const other = new PocketBase(url);
  other.autoCancellation(false);
  await other.collection("members").create({ email: "o@example.com", password: "password-123", passwordConfirm: "password-123" });
  await other.collection("members").authWithPassword("o@example.com", "password-123");
  const otherTok = await other.files.getToken();
  const denied = await fetch(user.files.getURL(v, v.paper, { token: otherTok }));
  check("another user's file token: 404", denied.status === 404, denied.status);
} catch (e) {
  failed++;
  console.log("FAIL unexpected error: " + (e.stack || e) + (e.response ? " " + JSON.stringify(e.response) : ""));
} finally {
  server.kill("SIGTERM");
  await new Promise((r) => server.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
