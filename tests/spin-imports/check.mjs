// The Spin component's import surface, checked against what released Spin (3.x/4.x) and Akamai
// Functions provide to an HTTP component. `jco wit` (the same output as `wasm-tools component
// wit`) prints the component's world; every `import` must match one of ALLOWED_IMPORTS and the
// only export must be the WASIp2 incoming handler. A new import (say a Spin SQLite or a wasi:
// filesystem one) fails CI here, before any deployment refuses the component.
//
//   node tests/spin-imports/check.mjs <component.wasm>
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

// WASI 0.2.x interfaces are linked by semver-compatible version, so any 0.2 patch is fine.
const ALLOWED_IMPORTS = [
  /^wasi:io\/(poll|error|streams)@0\.2\.\d+$/,
  /^wasi:clocks\/(monotonic-clock|wall-clock)@0\.2\.\d+$/,
  /^wasi:random\/(random|insecure|insecure-seed)@0\.2\.\d+$/,
  /^wasi:cli\/(environment|exit|stdin|stdout|stderr|terminal-input|terminal-output|terminal-stdin|terminal-stdout|terminal-stderr)@0\.2\.\d+$/,
  /^wasi:http\/(types|outgoing-handler)@0\.2\.\d+$/,
  /^fermyon:spin\/(key-value|variables)@2\.0\.0$/,
];
const REQUIRED_EXPORT = /^wasi:http\/incoming-handler@0\.2\.\d+$/;

const component = process.argv[2];
if (!component) {
  console.error("usage: node check.mjs <component.wasm>");
  process.exit(2);
}
const jco = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules", ".bin", "jco");
const wit = execFileSync(jco, ["wit", component], { encoding: "utf8" });

const lines = wit.split("\n").map((l) => l.trim());
const items = (kind) =>
  lines.filter((l) => l.startsWith(`${kind} `)).map((l) => l.slice(kind.length + 1).replace(/;$/, ""));
const imports = items("import");
const exports = items("export");

const problems = [];
for (const name of imports) {
  if (!ALLOWED_IMPORTS.some((re) => re.test(name))) problems.push(`import not provided by Spin: ${name}`);
}
if (exports.length !== 1 || !REQUIRED_EXPORT.test(exports[0])) {
  problems.push(`exports must be exactly wasi:http/incoming-handler@0.2.x, got: ${exports.join(", ") || "none"}`);
}
console.log(`imports (${imports.length}):\n  ${imports.join("\n  ")}\nexports: ${exports.join(", ")}`);
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("spin-imports: ok, every import is one Spin provides");
