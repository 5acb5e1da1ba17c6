// The dashboard's pages, registered in one place. Each entry: id, title (the
// navigation's label), home (where the navigation goes), route (a RegExp on the
// hash path; its groups are the page's params), component, nav (false: reachable but
// not listed). A capability that lands (tenants, for example) adds its page file and
// one line here, as backups, crons and settings did.
import { Collections, CollectionEdit } from "./collections.js";
import { Records } from "./records.js";
import { Logs } from "./logs.js";
import { Metrics } from "./metrics.js";
import { Backups } from "./backups.js";
import { Settings } from "./settings.js";
import { Crons } from "./crons.js";

export const pages = [
  { id: "collections", title: "Collections", home: "/collections", route: /^\/collections\/?$/, component: Collections },
  { id: "collection-edit", title: "Collection", home: "/collections", route: /^\/collections\/([^/]+)\/edit$/, component: CollectionEdit, nav: false },
  { id: "records", title: "Records", home: "/collections", route: /^\/records\/([^/]+)$/, component: Records, nav: false },
  { id: "logs", title: "Logs", home: "/logs", route: /^\/logs\/?$/, component: Logs },
  { id: "metrics", title: "Metrics", home: "/metrics", route: /^\/metrics\/?$/, component: Metrics },
  { id: "backups", title: "Backups", home: "/backups", route: /^\/backups\/?$/, component: Backups },
  { id: "crons", title: "Crons", home: "/crons", route: /^\/crons\/?$/, component: Crons },
  { id: "settings", title: "Settings", home: "/settings", route: /^\/settings\/?$/, component: Settings },
];
