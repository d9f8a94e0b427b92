#!/usr/bin/env node
// Runs the built Worker (worker/cloudflare/build) in workerd through Miniflare's API: the same
// runtime as `wrangler dev`, without wrangler's proxy, telemetry or prompts, on a free port.
//
//   node tests/cloudflare/mf-serve.mjs [--listen 127.0.0.1:0] [--persist DIR] [--script PATH]
//
// Prints one line, `listening http://127.0.0.1:PORT`, once requests are accepted (then workerd's
// and the Worker's logs). Bindings: the KV namespace UPLOAD_SESSIONS, the R2 bucket BLOBS (unless
// E2E_R2=off: then the Worker stores blobs where its settings say, S3 or Skynet), and every
// OPENREGISTRY_* variable of this process's environment as a var/secret (plus
// OPENREGISTRY_OPEN=true on a loopback address unless set). KV, R2 and Cache API data live under
// --persist (default: a temporary directory removed on exit), on disk rather than in workerd's
// memory, so workerd's RSS is the Worker's own. `cf: false`: no request.cf download. SIGTERM or
// SIGINT disposes of workerd and exits 0.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const listen = option("--listen", "127.0.0.1:0");
const [host, portText] = listen.split(":");
const script = path.resolve(option("--script", path.join(root, "worker/cloudflare/build/index.js")));
const persistOption = option("--persist", "");
const persist = persistOption ? path.resolve(persistOption) : mkdtempSync(path.join(tmpdir(), "openregistry-mf-"));

const bindings = {};
for (const [name, value] of Object.entries(process.env)) {
  if (name.startsWith("OPENREGISTRY_")) bindings[name] = value;
}
// Like the native host, which serves without authentication on loopback only: a Worker run here
// listens on 127.0.0.1, so it may be open unless the environment says otherwise.
if (bindings.OPENREGISTRY_OPEN === undefined && /^(127\.|localhost$|\[?::1\]?$)/.test(host)) {
  bindings.OPENREGISTRY_OPEN = "true";
}

// stdout carries only the ready line; Miniflare's and workerd's own output goes to stderr.
class StderrLog extends Log {
  log(message) {
    process.stderr.write(`${message}\n`);
  }
}

const mf = new Miniflare({
  host,
  port: Number(portText || 0),
  modules: true,
  scriptPath: script,
  // Module names are relative to this, whatever the working directory.
  modulesRoot: path.dirname(script),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
  // Not newer than the bundled workerd; the same as wrangler.toml.
  compatibilityDate: "2026-04-20",
  kvNamespaces: { UPLOAD_SESSIONS: "upload-sessions" },
  kvPersist: path.join(persist, "kv"),
  r2Buckets: process.env.E2E_R2 === "off" ? {} : { BLOBS: "openregistry-blobs" },
  r2Persist: path.join(persist, "r2"),
  cachePersist: path.join(persist, "cache"),
  bindings,
  cf: false,
  // Tests fire the Cron Trigger with GET /cdn-cgi/handler/scheduled.
  unsafeTriggerHandlers: true,
  log: new StderrLog(process.env.MF_LOG_LEVEL === "debug" ? LogLevel.DEBUG : LogLevel.INFO),
  handleRuntimeStdio(stdout, stderr) {
    stdout.pipe(process.stderr);
    stderr.pipe(process.stderr);
  },
});

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await mf.dispose();
  } catch (e) {
    console.error(`mf-serve: dispose failed: ${e}`);
  }
  if (!persistOption) rmSync(persist, { recursive: true, force: true });
  process.exit(code);
}
// Miniflare's own exit hook answers SIGTERM with exit(143) before an orderly dispose; replace it
// (its "exit" hook stays, and still kills workerd if anything is left).
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.removeAllListeners(signal);
  process.on(signal, () => stop(0));
}

try {
  const url = await mf.ready;
  console.log(`listening ${url.href.replace(/\/$/, "")}`);
} catch (e) {
  console.error(`mf-serve: workerd did not start: ${e?.stack ?? e}`);
  await stop(1);
}
