// Builds the dashboard into one folder (default ../../build/web/admin, beside the
// binary): hashed JS and CSS bundles (cached for a year by Basalt) and an index.html
// that names them (never cached). Nothing is fetched at run time.
import * as esbuild from "esbuild";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, resolve } from "node:path";

const out = resolve(process.argv[2] || "../../build/web/admin");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const t0 = Date.now();
const result = await esbuild.build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["es2020"],
  entryNames: "[name]-[hash]",
  outdir: out,
  metafile: true,
  logLevel: "warning",
  legalComments: "eof",
});
const files = Object.keys(result.metafile.outputs).map((f) => basename(f));
const js = files.find((f) => f.endsWith(".js"));
const css = files.find((f) => f.endsWith(".css"));
writeFileSync(
  `${out}/index.html`,
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Basalt dashboard</title>
<link rel="icon" href="data:,">
${css ? `<link rel="stylesheet" href="./${css}">` : ""}
</head>
<body>
<div id="app"><noscript>The dashboard needs JavaScript.</noscript></div>
<script type="module" src="./${js}"></script>
</body>
</html>
`,
);
console.log(`web/admin: built ${files.join(", ")} and index.html into ${out} in ${Date.now() - t0} ms`);
