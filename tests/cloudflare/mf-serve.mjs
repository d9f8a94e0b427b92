#!/usr/bin/env node
// Runs the built Worker (worker/cloudflare/build) in workerd through Miniflare's API: the same
// runtime as `wrangler dev`, without wrangler's proxy, telemetry or prompts, on a free port.
//
//   node tests/cloudflare/mf-serve.mjs [--listen 127.0.0.1:0] [--persist DIR] [--script PATH] [--direct]
//
// Prints one line, `listening http://127.0.0.1:PORT`, once requests are accepted (then workerd's
// and the Worker's logs). Bindings: the KV namespace UPLOAD_SESSIONS, the R2 bucket BLOBS (unless
// E2E_R2=off: then the Worker stores blobs where its settings say, S3 or Skynet), and every
// OPENREGISTRY_* variable of this process's environment as a var/secret (plus
// OPENREGISTRY_OPEN=true on a loopback address unless set). KV, R2 and Cache API data live under
// --persist (default: a temporary directory removed on exit), on disk rather than in workerd's
// memory, so workerd's RSS is the Worker's own. `cf: false`: no request.cf download. SIGTERM or
// SIGINT disposes of workerd and exits 0.
//
// The listening port is a small TCP front that hands every connection to workerd's own port,
// except one that opens with a TLS handshake: that one is closed at once, as a plain-HTTP server
// does. workerd instead waits on it, and clients that try HTTPS first (skopeo, with
// --tls-verify=false) then spend Go's 10 s TLS handshake timeout before they fall back to HTTP.
// `--direct` (benchmarks: no extra hop) lets workerd listen on the port itself; without it, a
// second line, `workerd http://127.0.0.1:PORT`, names workerd's own port.
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
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

const direct = process.argv.includes("--direct");
const mf = new Miniflare({
  host: direct ? host : "127.0.0.1",
  port: direct ? Number(portText || 0) : 0,
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

const TLS_HANDSHAKE = 0x16;

function front(target) {
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.once("readable", () => {
      const first = client.read();
      if (first === null) {
        client.destroy();
        return;
      }
      if (first[0] === TLS_HANDSHAKE) {
        client.destroy();
        return;
      }
      const upstream = net.connect(Number(target.port), target.hostname, () => {
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    client.resume();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(portText || 0), host, () => resolve(server.address().port));
  });
}

try {
  const url = await mf.ready;
  if (direct) {
    console.log(`listening ${url.href.replace(/\/$/, "")}`);
  } else {
    console.log(`listening http://${host}:${await front(url)}`);
    // workerd's own port, for benchmarks that load it without the front's hop.
    console.log(`workerd ${url.href.replace(/\/$/, "")}`);
  }
} catch (e) {
  console.error(`mf-serve: workerd did not start: ${e?.stack ?? e}`);
  await stop(1);
}
