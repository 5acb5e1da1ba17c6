// Loads the task manager's collections and rules (pb_schema.json) into a running
// Basalt through PocketBase's PUT /api/collections/import, as a superuser. Running it
// again changes nothing (the import is idempotent).
//
// A server may already have a `users` auth collection (PocketBase and Basalt make one,
// id _pb_users_auth_, on a fresh data folder; an older folder may have another id).
// The file's `users` then is not imported as is: the existing collection is kept (its
// id, its fields, its records), the fields
// of the example it lacks are added, the example's rules are set on it (open sign-up,
// each user sees only themselves), and the tasks' relation points at its id.
// Usage: node setup.mjs [URL] [EMAIL] [PASSWORD]  (or BASALT_URL, BASALT_EMAIL, BASALT_PASSWORD)
import PocketBase from "pocketbase";
import { readFileSync } from "node:fs";

const RULES = ["listRule", "viewRule", "createRule", "updateRule", "deleteRule"];

// The collections to import, given the server's current ones.
export function planImport(schema, existing) {
  const mine = schema.collections.find((c) => c.name === "users");
  const have = existing.find((c) => c.name === "users");
  // (Same id or not: an import replaces a collection's fields with the file's, which
  // would drop fields the server's users have, such as PocketBase's avatar.)
  if (!mine || !have) return { collections: schema.collections, notes: [] };
  if (have.type !== "auth")
    throw new Error(`the server has a collection named "users" that is not an auth collection (${have.type}); rename it first`);
  const added = mine.fields.filter((f) => !have.fields.some((x) => x.name === f.name));
  const users = { ...have, fields: [...have.fields, ...added] };
  for (const r of RULES) users[r] = mine[r];
  const collections = schema.collections.map((c) => (c === mine ? users : {
    ...c,
    fields: c.fields.map((f) => (f.type === "relation" && f.collectionId === mine.id ? { ...f, collectionId: have.id } : f)),
  }));
  const notes = [`kept the existing users collection (${have.id}) and its fields` +
    (added.length ? `, added its field(s) ${added.map((f) => f.name).join(", ")}` : "") + ", set the example's rules on it"];
  return { collections, notes };
}

async function main() {
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
    const { collections, notes } = planImport(schema, await pb.collections.getFullList());
    await pb.collections.import(collections, schema.deleteMissing);
    for (const n of notes) console.log(`taskmanager: ${n}`);
    console.log(`taskmanager: collections ${collections.map((c) => c.name).join(", ")} are in place on ${url}`);
  } catch (e) {
    console.error(`taskmanager: ${e.message}`, e.response && e.response.data ? JSON.stringify(e.response.data) : "");
    process.exit(1);
  }
}

if (import.meta.url === new URL(process.argv[1], "file://").href) await main();
