// Test stand-in for Neon's "SQL over HTTP" proxy (POST /sql), in front of a real PostgreSQL.
//
// Owns: the wire protocol of the reference notes neon-http.md sections 0.2 and 1-7 (routes, headers,
// connection-string parsing, body shapes, extended-protocol execution, batch transactions, result
// and error JSON, size limits) plus test-only endpoints under /__test/ (request count, delay).
// Every POST /sql gets a NEW PostgreSQL connection, closed afterwards, so no session state survives.
//
//   node gateway.mjs --listen 127.0.0.1:0 [--pg-host 127.0.0.1] [--pg-port 5432] [--quiet]
//
// Prints `listening http://127.0.0.1:PORT/sql` once ready; logs one line per POST /sql on stderr
// (unless --quiet); exits with 0 on SIGTERM/SIGINT.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';

const MAX_REQUEST = 10 * 1024 * 1024; // --sql-over-http-max-request-size-bytes default
const MAX_RESPONSE = 10 * 1024 * 1024; // --sql-over-http-max-response-size-bytes default
const ISOLATION = {
  Serializable: 'SERIALIZABLE',
  ReadUncommitted: 'READ UNCOMMITTED',
  ReadCommitted: 'READ COMMITTED',
  RepeatableRead: 'REPEATABLE READ',
};
const ERROR_KEYS = ['message', 'code', 'detail', 'hint', 'position', 'internalPosition', 'internalQuery',
  'severity', 'where', 'table', 'column', 'schema', 'dataType', 'constraint', 'file', 'line', 'routine'];
const CORS_ALLOW_HEADERS = 'Authorization, Neon-Connection-String, Neon-Raw-Text-Output, Neon-Array-Mode, '
  + 'Neon-Pool-Opt-In, Neon-Batch-Read-Only, Neon-Batch-Isolation-Level';

// ---------------------------------------------------------------------------------------------
// errors

/** An answer other than 200: status plus the 17-key error body. */
class HttpError extends Error {
  constructor(status, message, fields = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

const userError = (message) => new HttpError(400, message);

function errorBody(message, fields = {}) {
  const body = {};
  for (const key of ERROR_KEYS) body[key] = null;
  Object.assign(body, { message, code: '', severity: '' });
  for (const key of ERROR_KEYS.slice(1)) {
    if (fields[key] !== undefined && fields[key] !== null) body[key] = String(fields[key]);
  }
  return body;
}

/** A pg error from a statement, BEGIN or COMMIT: 400 with the PostgreSQL fields (code '' if none). */
function queryError(err) {
  if (err instanceof HttpError) return err;
  return new HttpError(400, err.message, err instanceof pg.DatabaseError ? err : {});
}

// ---------------------------------------------------------------------------------------------
// request parsing

/** Neon-Connection-String -> {user, password, database}; the host is checked, then ignored. */
function parseConnectionString(headers) {
  const raw = headers['neon-connection-string'];
  if (typeof raw !== 'string' || !/^[\x20-\x7e\t]*$/.test(raw)) {
    throw userError('invalid header: neon-connection-string');
  }
  let url;
  try {
    url = new URL(raw);
  } catch (e) {
    throw userError(`invalid connection string: ${e.message}`);
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw userError('incorrect scheme');
  if (!url.pathname.startsWith('/')) throw userError('missing database name');
  const decode = (s, what) => {
    try { return decodeURIComponent(s); } catch (e) { throw userError(`invalid ${what}: ${e.message}`); }
  };
  const database = decode(url.pathname.slice(1).split('/')[0], 'database name');
  const user = decode(url.username, 'username');
  if (!user) throw userError('missing username');
  if (headers.authorization !== undefined || !url.password) {
    // A password-only proxy: a Bearer token is not accepted, a password is required.
    throw userError('missing authentication credentials: required password');
  }
  const password = decode(url.password, 'password');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!host || net.isIP(host)) throw userError('missing hostname');
  return { user, password, database };
}

/** The output and batch options; only the exact value `true` turns a flag on. */
function parseOptionHeaders(headers) {
  const level = headers['neon-batch-isolation-level'];
  if (level !== undefined && !Object.hasOwn(ISOLATION, level)) throw userError('invalid isolation level');
  return {
    rawOutput: headers['neon-raw-text-output'] === 'true',
    arrayMode: headers['neon-array-mode'] === 'true',
    isolationLevel: level,
    readOnly: headers['neon-batch-read-only'] === 'true',
    deferrable: headers['neon-batch-deferrable'] === 'true',
  };
}

/** Reads the whole body; past the limit it keeps draining (so the client sees the 413) but drops it. */
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= MAX_REQUEST) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > MAX_REQUEST ? null : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const BAD_SHAPE = 'data did not match any variant of untagged enum Payload';

function parseQueryData(q) {
  if (q === null || typeof q !== 'object' || Array.isArray(q) || typeof q.query !== 'string') return null;
  if (q.params !== undefined && !Array.isArray(q.params)) return null;
  if (q.arrayMode !== undefined && q.arrayMode !== null && typeof q.arrayMode !== 'boolean') return null;
  return { query: q.query, params: (q.params ?? []).map(jsonToPgText), arrayMode: q.arrayMode ?? undefined };
}

/** `{query, params?, arrayMode?}` wins; else `{queries: [...]}`; unknown keys are ignored. */
function parsePayload(body) {
  let json;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw userError(`could not parse the HTTP request body: ${e.message}`);
  }
  const single = parseQueryData(json);
  if (single) return { single };
  if (json && typeof json === 'object' && Array.isArray(json.queries)) {
    const batch = json.queries.map(parseQueryData);
    if (batch.every(Boolean)) return { batch };
  }
  throw userError(`could not parse the HTTP request body: ${BAD_SHAPE}`);
}

/** JSON param -> PG text (json.rs json_to_pg_text): null is NULL, strings verbatim, arrays as PG literals. */
function jsonToPgText(value) {
  if (value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return jsonArrayToPgArray(value);
  return JSON.stringify(value);
}

function jsonArrayToPgArray(value) {
  if (value === null) return null;
  if (Array.isArray(value)) return `{${value.map((v) => jsonArrayToPgArray(v) ?? 'NULL').join(',')}}`;
  if (typeof value === 'object') return JSON.stringify(JSON.stringify(value));
  return JSON.stringify(value); // strings are quoted with JSON escaping, as upstream does
}

// ---------------------------------------------------------------------------------------------
// execution

/**
 * One statement through the extended protocol: Parse (unnamed, no parameter types), Bind (text
 * params, text results), Describe, Execute, Sync. Rows arrive as raw text (string | null) and go
 * to onRow(row, query) as they come; if onRow throws, the query is abandoned with that error.
 */
class RawQuery extends pg.Query {
  constructor(text, values, onRow) {
    super({ text, values, queryMode: 'extended' });
    this.onRow = onRow;
    this.fields = [];
    this.commandTag = '';
    this.failed = null;
  }

  handleRowDescription(msg) { this.fields = msg.fields; }

  handleDataRow(msg) {
    if (this.failed) return;
    try {
      this.onRow(msg.fields, this);
    } catch (err) {
      this.failed = err;
      this.emit('abandon', err);
    }
  }

  handleCommandComplete(msg) { this.commandTag = msg.text; }
}

function runQuery(client, text, values, onRow = () => {}) {
  return new Promise((resolve, reject) => {
    const q = new RawQuery(text, values, onRow);
    q.on('error', reject);
    q.on('end', () => resolve(q));
    q.on('abandon', (err) => {
      reject(err);
      client.connection.stream.destroy(); // stop PostgreSQL streaming rows nobody will read
    });
    client.query(q);
  });
}

/** `command` is the tag's first word; `rowCount` the row count (after the OID for INSERT) or null. */
function parseCommandTag(tag) {
  const words = tag.split(' ');
  const count = words[0] === 'INSERT' ? words[2] : words[1];
  return { command: words[0], rowCount: /^-?\d+$/.test(count ?? '') ? Number(count) : null };
}

const tooLarge = () => new HttpError(507, `response is too large (max is ${MAX_RESPONSE} bytes)`);

/** Collects the JSON response text; the size limit is checked after every row, over the whole response. */
class ResponseWriter {
  constructor() { this.parts = []; this.size = 0; }

  write(text) {
    this.parts.push(text);
    this.size += Buffer.byteLength(text);
  }

  writeRow(text) {
    this.write(text);
    if (this.size > MAX_RESPONSE) throw tooLarge();
  }

  text() { return this.parts.join(''); }
}

/** Runs one statement and appends its result object to `out`. */
async function runStatement(client, stmt, opts, out) {
  const arrayMode = stmt.arrayMode ?? opts.arrayMode;
  let fields = null;
  let rows = 0;
  const begin = (q) => {
    fields = q.fields.map((f) => ({
      name: f.name, dataTypeID: f.dataTypeID, tableID: f.tableID, columnID: f.columnID,
      dataTypeSize: f.dataTypeSize, dataTypeModifier: f.dataTypeModifier, format: 'text',
    }));
    out.write(`{"fields":${JSON.stringify(fields)},"rows":[`);
  };
  const writeRow = (values) => {
    const text = arrayMode
      ? `[${values.join(',')}]`
      : `{${values.map((v, i) => `${JSON.stringify(fields[i].name)}:${v}`).join(',')}}`;
    out.writeRow((rows++ ? ',' : '') + text);
  };
  const raw = (v) => (v === null ? 'null' : JSON.stringify(v));

  // Raw output is written as rows stream in. Typed output needs the types' array-ness first,
  // so rows wait for the end of the statement (their raw size counts against the limit meanwhile).
  const pending = [];
  let pendingSize = 0;
  const q = await runQuery(client, stmt.query, stmt.params, (row, query) => {
    if (!fields) begin(query);
    if (opts.rawOutput) return writeRow(row.map(raw));
    pending.push(row);
    pendingSize += Buffer.byteLength(JSON.stringify(row));
    if (out.size + pendingSize > MAX_RESPONSE) throw tooLarge();
    return undefined;
  }).catch((err) => { throw queryError(err); });
  if (!fields) begin(q);
  if (pending.length) {
    const arrays = await typeInfo(client, fields);
    for (const row of pending) {
      writeRow(row.map((v, i) => (v === null ? 'null' : pgTextToJson(v, fields[i].dataTypeID, arrays))));
    }
  }
  const { command, rowCount } = parseCommandTag(q.commandTag);
  out.write(`],"command":${JSON.stringify(command)},"rowCount":${rowCount},"rowAsArray":${arrayMode}}`);
}

/** For typed output: which result OIDs are arrays, and of what element type. */
async function typeInfo(client, fields) {
  const oids = [...new Set(fields.map((f) => f.dataTypeID))];
  if (oids.length === 0) return new Map();
  const sql = "SELECT oid::int8::text, typelem::int8::text FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])"
    + " AND typelem <> 0 AND typtype = 'b' AND (typcategory = 'A' OR oid IN (22, 30))";
  const elems = new Map();
  await runQuery(client, sql, [`{${oids.join(',')}}`], ([oid, elem]) => elems.set(Number(oid), Number(elem)));
  return elems;
}

/** Typed mode (json.rs pg_text_to_json): bool, int2/int4, float4/8, json/jsonb, arrays; else a string. */
function pgTextToJson(text, oid, arrays) {
  if (arrays.has(oid)) return pgArrayToJson(text, arrays.get(oid), arrays);
  switch (oid) {
    case 16: return text === 't' ? 'true' : 'false';
    case 21: case 23: return String(parseInt(text, 10));
    case 700: case 701: {
      const f = Number(text);
      return Number.isFinite(f) ? JSON.stringify(f) : JSON.stringify(text);
    }
    case 114: case 3802: return text;
    default: return JSON.stringify(text);
  }
}

/** A PG array literal as a JSON array (bounds prefix dropped, quoted items unescaped, NULL -> null). */
function pgArrayToJson(text, elemOid, arrays) {
  let s = text;
  if (s.startsWith('[')) {
    const eq = s.indexOf('=');
    if (eq < 0) throw new HttpError(500, 'could not parse postgres response');
    s = s.slice(eq + 1);
  }
  let i = 0;
  const fail = () => { throw new HttpError(500, 'could not parse postgres response'); };
  const skipWs = () => { while (i < s.length && /\s/.test(s[i])) i++; };
  const parseArray = () => {
    skipWs();
    if (s[i] !== '{') fail();
    i++;
    const items = [];
    for (;;) {
      skipWs();
      if (s[i] === '{') {
        items.push(parseArray());
      } else if (s[i] === '"') {
        let item = '';
        for (i++; ; i++) {
          if (i >= s.length) fail();
          if (s[i] === '"') break;
          if (s[i] === '\\') i++;
          item += s[i];
        }
        i++;
        items.push(pgTextToJson(item, elemOid, arrays));
      } else {
        let j = i;
        while (j < s.length && s[j] !== ',' && s[j] !== '}') j++;
        if (j >= s.length) fail();
        const item = s.slice(i, j).trim();
        i = j;
        items.push(item === 'NULL' ? 'null' : pgTextToJson(item, elemOid, arrays));
      }
      skipWs();
      if (s[i] === ',') { i++; continue; }
      if (s[i] !== '}') fail();
      i++;
      skipWs();
      return `[${items.join(',')}]`;
    }
  };
  const json = parseArray();
  if (i !== s.length) fail();
  return json;
}

// ---------------------------------------------------------------------------------------------
// one POST /sql

async function connect(config, conn) {
  const client = new pg.Client({
    host: config.pgHost, port: config.pgPort,
    user: conn.user, password: conn.password, database: conn.database,
  });
  client.on('error', () => {}); // a dropped connection surfaces through the running query instead
  try {
    await client.connect();
  } catch (err) {
    client.end().catch(() => {});
    if (err.code === '28P01' || err.code === '28000') {
      throw new HttpError(400, `password authentication failed for user '${conn.user}'`);
    }
    if (err instanceof pg.DatabaseError) throw new HttpError(500, err.message, err); // compute said no
    throw new HttpError(500, "Couldn't connect to compute node");
  }
  return client;
}

async function execute(client, payload, opts) {
  const out = new ResponseWriter();
  if (payload.single) {
    await runStatement(client, payload.single, opts, out);
    return out.text();
  }
  const modes = [];
  if (opts.isolationLevel) modes.push(`ISOLATION LEVEL ${ISOLATION[opts.isolationLevel]}`);
  if (opts.readOnly) modes.push('READ ONLY');
  if (opts.deferrable) modes.push('DEFERRABLE');
  await client.query(`START TRANSACTION${modes.length ? ` ${modes.join(', ')}` : ''}`)
    .catch((err) => { throw queryError(err); });
  try {
    out.write('{"results":[');
    for (const [n, stmt] of payload.batch.entries()) {
      if (n) out.write(',');
      await runStatement(client, stmt, opts, out);
    }
    out.write(']}');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  await client.query('COMMIT').catch((err) => { throw queryError(err); });
  return out.text();
}

async function handleSql(req, res, config, state) {
  state.requests += 1;
  const started = Date.now();
  const headers = { 'Content-Type': 'application/json', 'Access-Control-Allow-Origin': '*' };
  let client = null;
  let summary = '';
  const disconnected = () => !res.writableFinished && (res.destroyed || req.socket?.destroyed);
  res.on('close', () => {
    // The caller went away mid-query: cancel it (CancelRequest on a new connection), as the proxy does.
    if (!res.writableFinished && client?.processID) {
      const con = new pg.Connection();
      con.on('error', () => {});
      con.on('connect', () => con.cancel(client.processID, client.secretKey));
      con.connect(config.pgPort, config.pgHost);
    }
  });

  let status = 200;
  let body;
  try {
    const bodyPromise = readBody(req); // drain first, whatever the outcome
    let conn;
    let opts;
    let payloadError;
    try {
      conn = parseConnectionString(req.headers);
      opts = parseOptionHeaders(req.headers);
    } catch (err) {
      payloadError = err;
    }
    const raw = await bodyPromise;
    if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
    if (payloadError) throw payloadError;
    if (raw === null) throw new HttpError(413, `request is too large (max is ${MAX_REQUEST} bytes)`);
    const payload = parsePayload(raw);
    summary = (payload.single ? [payload.single] : payload.batch).map((q) => q.query).join(' ; ');
    if (disconnected()) return;
    client = await connect(config, conn);
    body = await execute(client, payload, opts);
    if (payload.batch) {
      if (opts.readOnly) headers['Neon-Batch-Read-Only'] = 'true';
      if (opts.deferrable) headers['Neon-Batch-Deferrable'] = 'true';
      if (opts.isolationLevel) headers['Neon-Batch-Isolation-Level'] = opts.isolationLevel;
    }
  } catch (err) {
    const e = err instanceof HttpError ? err : new HttpError(500, String(err?.message ?? err));
    status = e.status;
    body = JSON.stringify(errorBody(e.message, e.fields));
  } finally {
    if (client) client.end().catch(() => {});
  }
  if (!config.quiet) {
    const q = summary.replace(/\s+/g, ' ').slice(0, 160);
    process.stderr.write(`neon-gateway: ${status} ${Date.now() - started}ms ${q}\n`);
  }
  if (disconnected()) return;
  res.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// ---------------------------------------------------------------------------------------------
// routing and the test-only endpoints

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

async function handleTest(req, res, path, state) {
  const raw = (await readBody(req)) ?? Buffer.alloc(0);
  if (req.method === 'GET' && path === '/__test/stats') return sendJson(res, 200, { requests: state.requests });
  if (req.method === 'POST' && path === '/__test/reset-stats') {
    state.requests = 0;
    return sendJson(res, 200, { requests: 0 });
  }
  if (req.method === 'POST' && path === '/__test/delay') {
    let ms;
    try { ms = JSON.parse(raw.toString('utf8')).ms; } catch { ms = undefined; }
    if (!Number.isFinite(ms) || ms < 0) return sendJson(res, 400, { message: 'expected {"ms": N} with N >= 0' });
    state.delayMs = ms;
    return sendJson(res, 200, { ms });
  }
  return sendJson(res, 400, 'query is not supported');
}

function handle(req, res, config, state) {
  const path = new URL(req.url, 'http://gateway').pathname;
  if (path === '/sql' && req.method === 'POST') return handleSql(req, res, config, state);
  if (path === '/sql' && req.method === 'OPTIONS') {
    req.resume();
    res.writeHead(200, {
      Allow: 'OPTIONS, POST',
      'Access-Control-Allow-Origin': '*',
      'Access-Control-Allow-Headers': CORS_ALLOW_HEADERS,
      'Access-Control-Max-Age': '86400',
    });
    return res.end();
  }
  if (path.startsWith('/__test/')) return handleTest(req, res, path, state);
  req.resume();
  req.on('end', () => sendJson(res, 400, 'query is not supported'));
  return undefined;
}

export function startGateway({ host = '127.0.0.1', port = 0, pgHost = '127.0.0.1', pgPort = 5432, quiet = false } = {}) {
  const config = { pgHost, pgPort, quiet };
  const state = { requests: 0, delayMs: 0 };
  const server = http.createServer((req, res) => {
    Promise.resolve(handle(req, res, config, state)).catch((err) => {
      process.stderr.write(`neon-gateway: internal error: ${err?.stack ?? err}\n`);
      if (!res.headersSent) sendJson(res, 500, errorBody(String(err?.message ?? err)));
      else res.destroy();
    });
  });
  // Longer than common HTTP-client idle timeouts, so the gateway never closes a kept-alive
  // connection just as a client reuses it.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: actual } = server.address();
      resolve({
        server,
        url: `http://${host}:${actual}/sql`,
        close: () => new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }),
      });
    });
  });
}

async function main() {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: '127.0.0.1:0' },
      'pg-host': { type: 'string', default: '127.0.0.1' },
      'pg-port': { type: 'string', default: '5432' },
      quiet: { type: 'boolean', default: false },
    },
  });
  const m = /^(.*):(\d+)$/.exec(values.listen);
  if (!m) throw new Error(`--listen wants HOST:PORT, not ${values.listen}`);
  const gw = await startGateway({
    host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]),
    pgHost: values['pg-host'], pgPort: Number(values['pg-port']), quiet: values.quiet,
  });
  process.stdout.write(`listening ${gw.url}\n`);
  const stop = () => gw.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href) {
  main().catch((err) => {
    process.stderr.write(`neon-gateway: ${err?.stack ?? err}\n`);
    process.exit(1);
  });
}
