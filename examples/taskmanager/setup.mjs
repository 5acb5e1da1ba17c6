// Loads the task manager's collections and rules (pb_schema.json) into a running
// Basalt through PocketBase's PUT /api/collections/import, as a superuser. Running it
// again changes nothing (the import is idempotent).
// Usage: node setup.mjs [URL] [EMAIL] [PASSWORD]  (or BASALT_URL, BASALT_EMAIL, BASALT_PASSWORD)
import PocketBase from "pocketbase";
import { readFileSync } from "node:fs";

const [url = process.env.BASALT_URL || "http://127.0.0.1:8090",
  email = process.env.BASALT_EMAIL, password = process.env.BASALT_PASSWORD] = process.argv.slice(2);
if (!email || !password) {
  console.error("Usage: node setup.mjs [URL] EMAIL PASSWORD   (a superuser of the server at URL)");
  process.exit(2);
}
const schema = JSON.parse(readFileSync(new URL("./pb_schema.json", import.meta.url)));
const pb = new PocketBase(url);
try {
  await pb.collection("_superusers").authWithPassword(email, password);
  await pb.collections.import(schema.collections, schema.deleteMissing);
  console.log(`taskmanager: collections ${schema.collections.map((c) => c.name).join(", ")} are in place on ${url}`);
} catch (e) {
  console.error(`taskmanager: ${e.message}`, e.response && e.response.data ? JSON.stringify(e.response.data) : "");
  process.exit(1);
}
