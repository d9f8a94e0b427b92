// Test stand-in for a Skynet portal (nginx + skyd + tusd), on 127.0.0.1 only.
//
// Owns: the portal HTTP API of the reference notes skynet.md sections 2-5, 7 and 8 as the official
// SDKs and our registry use it: POST /skynet/skyfile (multipart or raw, chunked bodies), TUS 1.0.0
// at /skynet/tus (creation, creation-with-upload, concatenation, skyd's 40 MiB chunk rule),
// downloads (/<skylink>[/path], /file/<skylink>, base32 subdomains; Range, ETag), metadata, pin,
// portal/CORS headers, the optional API-key requirement, storage on disk (nothing is held whole
// in memory), plus test-only fault injection and counters under /__test/. Skylink arithmetic
// lives in skylink.mjs.
//
//   node portal.mjs --listen 127.0.0.1:0 [--data-dir DIR] [--require-api-key KEY] [--quiet]
//
// Prints `listening http://127.0.0.1:PORT` once ready; logs one line per request on stderr
// (unless --quiet); exits with 0 on SIGTERM/SIGINT. Without --data-dir a temp dir is used and
// removed at exit. Data in --data-dir survives restarts (skyfiles and TUS uploads).

import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as sky from './skylink.mjs';

const CHUNK = sky.CHUNK_SIZE;
const TUS_EXTENSIONS = 'creation,creation-with-upload,concatenation';
const CORS_ALLOW_HEADERS = 'DNT,User-Agent,X-Requested-With,If-Modified-Since,If-None-Match,Cache-Control,'
  + 'Content-Type,Range,X-HTTP-Method-Override,upload-offset,upload-metadata,upload-length,tus-version,'
  + 'tus-resumable,tus-extension,tus-max-size,upload-concat,location,Skynet-API-Key';
const CORS_EXPOSE_HEADERS = 'Content-Length,Content-Range,ETag,Accept-Ranges,Skynet-File-Metadata,Skynet-Skylink,'
  + 'Skynet-Proof,Skynet-Portal-Api,Skynet-Server-Api,upload-offset,upload-metadata,upload-length,tus-version,'
  + 'tus-resumable,tus-extension,tus-max-size,upload-concat,location';
const MIME = {
  '.html': 'text/html; charset=utf-8', '.htm': 'text/html; charset=utf-8', '.txt': 'text/plain; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json', '.xml': 'text/xml; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp', '.pdf': 'application/pdf',
  '.wasm': 'application/wasm', '.zip': 'application/zip', '.gz': 'application/gzip', '.tar': 'application/x-tar',
  '.bin': 'application/octet-stream', '.mp4': 'video/mp4', '.mp3': 'audio/mpeg',
};

// ---------------------------------------------------------------------------------------------
// errors: skyd answers JSON {"message"}, tusd plain text, nginx HTML

class HttpError extends Error {
  constructor(status, message, kind = 'json') {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}
const skydError = (status, message) => new HttpError(status, message, 'json');
const tusError = (status, message) => new HttpError(status, message, 'text');

function sendError(req, res, err) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const e = err instanceof HttpError ? err : new HttpError(500, String(err?.message || err));
  let body;
  let type;
  if (e.kind === 'text') [body, type] = [`${e.message}\n`, 'text/plain; charset=utf-8'];
  else if (e.kind === 'html') [body, type] = [`<html><head><title>${e.status} ${e.message}</title></head><body><center><h1>${e.status} ${e.message}</h1></center></body></html>\n`, 'text/html'];
  else [body, type] = [`${JSON.stringify({ message: e.message })}\n`, 'application/json; charset=utf-8'];
  if (req.method === 'HEAD') body = '';
  res.writeHead(e.status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// ---------------------------------------------------------------------------------------------
// small helpers

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const randomId = () => crypto.randomBytes(16).toString('hex');

/** Go's strconv.ParseBool; undefined when absent, throws 400 when invalid. */
function parseBool(params, name) {
  const v = params.get(name);
  if (v === null || v === '') return undefined;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  throw skydError(400, `unable to parse '${name}' parameter: strconv.ParseBool: parsing "${v}": invalid syntax`);
}

function parseMode(text, what) {
  if (!/^[0-7]{1,11}$/.test(text)) throw skydError(400, `unable to parse ${what}: invalid mode "${text}"`);
  return parseInt(text, 8);
}

/** skyd's path check for skyfile and subfile names. */
function validPath(p) {
  return typeof p === 'string' && p !== '' && p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

/** "type/subtype; a=b" -> {type (lower case), params} with quoted values unescaped, RFC 2231 filename*. */
function parseHeaderParams(value) {
  const [first] = (value || '').split(';');
  const params = {};
  const re = /;\s*([^=\s;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
  for (const m of (value || '').slice(first.length).matchAll(re)) {
    let v = m[2].trim();
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    const key = m[1].toLowerCase();
    if (key.endsWith('*')) {
      const enc = /^([^']*)'[^']*'(.*)$/.exec(v);
      if (enc) {
        try {
          params[key.slice(0, -1)] = decodeURIComponent(enc[2]);
        } catch { /* keep the plain one */ }
      }
    } else if (!(key in params)) params[key] = v;
  }
  return { type: first.trim().toLowerCase(), params };
}

/** Content type of a served file: Go's mime.TypeByExtension, else a little of http.DetectContentType. */
function detectContentType(name, head) {
  const ext = path.extname(name).toLowerCase();
  if (MIME[ext]) return MIME[ext];
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'application/x-gzip';
  if (head.length >= 4 && head.readUInt32BE(0) === 0x504b0304) return 'application/zip';
  if (head.length >= 8 && head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (head.length >= 5 && head.subarray(0, 5).toString() === '%PDF-') return 'application/pdf';
  const binary = head.some((b) => b <= 0x08 || b === 0x0b || (b >= 0x0e && b <= 0x1a) || (b >= 0x1c && b <= 0x1f));
  return binary ? 'application/octet-stream' : 'text/plain; charset=utf-8';
}

/**
 * The chunks of a request body. Unlike `for await (... of req)`, leaving the loop early does not
 * destroy the request - Node would then leave the kept-alive socket paused for good, hanging the
 * connection's next request - but reads and discards the rest in the background, as Node does
 * for a request answered unread. Set `opts.drain = false` before leaving to skip that.
 */
async function* bodyChunks(req, opts = { drain: true }) {
  const it = req[Symbol.asyncIterator]();
  let done = false;
  try {
    for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
    done = true;
  } catch (err) {
    done = true; // the client went away
    throw err;
  } finally {
    if (!done && opts.drain) {
      (async () => {
        try {
          while (!(await it.next()).done);
        } catch { /* the client went away */ }
      })();
    }
  }
}

function drained(stream) {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

// ---------------------------------------------------------------------------------------------
// streaming multipart/form-data parser (raw part headers, so names keep their paths and the
// part's Content-Type is recorded verbatim, as skyd does)

class MultipartParser {
  constructor(boundary) {
    this.delim = Buffer.from(`\r\n--${boundary}`);
    this.buf = Buffer.from('\r\n'); // lets the first boundary match the same delimiter
    this.state = 'preamble';
  }

  /** Feeds bytes; returns events {type:'part', headers} | {type:'data', buf} | {type:'end'}. */
  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const events = [];
    for (;;) {
      if (this.state === 'preamble' || this.state === 'body') {
        const i = this.buf.indexOf(this.delim);
        if (i < 0) {
          const keep = Math.min(this.buf.length, this.delim.length - 1);
          const safe = this.buf.length - keep;
          if (this.state === 'body' && safe > 0) events.push({ type: 'data', buf: this.buf.subarray(0, safe) });
          this.buf = Buffer.from(this.buf.subarray(safe));
          return events;
        }
        if (this.state === 'body') {
          if (i > 0) events.push({ type: 'data', buf: this.buf.subarray(0, i) });
          events.push({ type: 'end' });
        }
        this.buf = this.buf.subarray(i + this.delim.length);
        this.state = 'delimiter';
      }
      if (this.state === 'delimiter') {
        if (this.buf.length < 2) return events;
        if (this.buf[0] === 0x2d && this.buf[1] === 0x2d) {
          this.state = 'done';
          this.buf = Buffer.alloc(0);
          return events;
        }
        const eol = this.buf.indexOf('\r\n');
        if (eol < 0) {
          if (this.buf.length > 1024) throw new Error('multipart: boundary line too long');
          return events;
        }
        if (this.buf.subarray(0, eol).toString().trim() !== '') throw new Error('multipart: malformed boundary line');
        this.buf = this.buf.subarray(eol + 2);
        this.state = 'headers';
      }
      if (this.state === 'headers') {
        let headers = {};
        if (this.buf.length >= 2 && this.buf[0] === 0x0d && this.buf[1] === 0x0a) {
          this.buf = this.buf.subarray(2);
        } else {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) {
            if (this.buf.length > 16384) throw new Error('multipart: part headers too long');
            return events;
          }
          headers = parsePartHeaders(this.buf.subarray(0, end).toString('utf8'));
          this.buf = this.buf.subarray(end + 4);
        }
        events.push({ type: 'part', headers });
        this.state = 'body';
      }
      if (this.state === 'done') {
        this.buf = Buffer.alloc(0); // the epilogue is ignored
        return events;
      }
    }
  }

  end() {
    if (this.state !== 'done') throw new Error('multipart: NextPart: EOF');
  }
}

function parsePartHeaders(text) {
  const headers = {};
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return headers;
}

// ---------------------------------------------------------------------------------------------
// storage: DIR/skyfiles/<skylink>.json (metadata + where the bytes are), DIR/blobs/* (skyfile
// data), DIR/tus/<id>.json + <id>.bin (TUS uploads; a finished upload's skyfile points at them)

class Store {
  constructor(dir) {
    this.dir = dir;
    for (const sub of ['skyfiles', 'blobs', 'tus']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    this.skyfiles = new Map();
    this.uploads = new Map();
  }

  abs(rel) {
    return path.join(this.dir, rel);
  }

  newBlob() {
    return path.join('blobs', randomId());
  }

  getSkyfile(skylink) {
    if (!this.skyfiles.has(skylink)) {
      try {
        this.skyfiles.set(skylink, JSON.parse(fs.readFileSync(this.abs(`skyfiles/${skylink}.json`), 'utf8')));
      } catch {
        return null;
      }
    }
    return this.skyfiles.get(skylink);
  }

  /** Records a skyfile; false if that skylink already exists (same bytes and metadata). */
  putSkyfile(record) {
    if (this.getSkyfile(record.skylink)) return false;
    const file = this.abs(`skyfiles/${record.skylink}.json`);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(record));
    fs.renameSync(`${file}.tmp`, file);
    this.skyfiles.set(record.skylink, record);
    return true;
  }

  getUpload(id) {
    if (!/^[0-9a-f]{32}$/.test(id)) return null;
    if (!this.uploads.has(id)) {
      try {
        this.uploads.set(id, JSON.parse(fs.readFileSync(this.abs(`tus/${id}.json`), 'utf8')));
      } catch {
        return null;
      }
    }
    return this.uploads.get(id);
  }

  saveUpload(info) {
    const file = this.abs(`tus/${info.id}.json`);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(info));
    fs.renameSync(`${file}.tmp`, file);
    this.uploads.set(info.id, info);
  }

  /** Streams bytes [start, end) of the concatenated segments into `sink(buf)` (may be async). */
  async readRange(segments, start, end, sink) {
    let base = 0;
    for (const seg of segments) {
      const from = Math.max(start, base);
      const to = Math.min(end, base + seg.length);
      if (from < to) {
        const rs = fs.createReadStream(this.abs(seg.file), { start: from - base, end: to - base - 1 });
        try {
          for await (const chunk of rs) {
            if ((await sink(chunk)) === false) return false;
          }
        } finally {
          rs.destroy();
        }
      }
      base += seg.length;
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// the portal

export class Portal {
  constructor({ dataDir, apiKey = null, quiet = false }) {
    this.store = new Store(dataDir);
    this.apiKey = apiKey;
    this.quiet = quiet;
    this.faults = {};
    this.patchesSinceFaults = 0;
    this.locks = new Set();
    this.resetStats();
    this.server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 75_000 }, (req, res) => {
      this.handle(req, res).catch((err) => {
        if (!(err instanceof HttpError)) console.error(`portal: ${req.method} ${req.url}: ${err?.stack || err}`);
        sendError(req, res, err);
      });
    });
  }

  resetStats() {
    this.stats = { skyfileUploads: 0, tusCreates: 0, patches: 0, concatenations: 0, downloads: 0, heads: 0,
      metadata: 0, pins: 0, unauthorized: 0, bytesStored: 0, bytesServed: 0 };
  }

  get origin() {
    const { address, port } = this.server.address();
    return `http://${address}:${port}`;
  }

  async handle(req, res) {
    const url = new URL(req.url, 'http://portal.invalid');
    const p = url.pathname;
    if (!this.quiet) res.on('finish', () => console.error(`${req.method} ${req.url} -> ${res.statusCode}`));
    // nginx's header_filter_by_lua and include/cors-headers, on every response
    res.setHeader('Skynet-Portal-Api', this.origin);
    res.setHeader('Skynet-Server-Api', this.origin);
    if (req.headers.origin) {
      res.setHeader('Access-Control-Allow-Origin', req.headers.origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
    }
    res.setHeader('Access-Control-Allow-Methods', 'GET, POST, HEAD, OPTIONS, PUT, PATCH, DELETE');
    res.setHeader('Access-Control-Allow-Headers', CORS_ALLOW_HEADERS);
    res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS);

    if (p.startsWith('/__test/')) return this.testEndpoint(req, res, p);
    const isTus = p === '/skynet/tus' || p.startsWith('/skynet/tus/');
    if (req.method === 'OPTIONS' && !isTus) { // nginx answers preflights itself, before the access check
      res.writeHead(204, { 'Access-Control-Max-Age': '1728000', 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': '0' });
      return res.end();
    }
    if (this.apiKey !== null && req.headers['skynet-api-key'] !== this.apiKey) {
      this.stats.unauthorized++;
      throw new HttpError(401, 'Authorization Required', 'html');
    }
    if (this.faults.delayMs) await sleep(this.faults.delayMs);

    if (isTus) return this.tus(req, res, p.slice('/skynet/tus'.length).replace(/^\/+/, '').replace(/\/+$/, ''));
    if (p === '/skynet/skyfile' || p.startsWith('/skynet/skyfile/')) {
      if (req.method !== 'POST') throw tusError(405, 'Method Not Allowed');
      return this.skyfileUpload(req, res, url.searchParams);
    }
    let m;
    if ((m = /^\/skynet\/metadata\/([^/]+)/.exec(p))) return this.metadata(req, res, m[1]);
    if ((m = /^\/skynet\/pin\/([^/]+)(\/.*)?$/.exec(p))) return this.pin(req, res, m[1], m[2]);
    const hostLabel = (req.headers.host || '').split('.')[0];
    if (/^[a-z0-9]{55}$/i.test(hostLabel) && (req.headers.host || '').includes('.')) {
      return this.download(req, res, url, hostLabel, p, false);
    }
    if ((m = /^\/file\/([a-zA-Z0-9_-]{46}|[a-z0-9]{55})(\/.*)?$/.exec(p))) return this.download(req, res, url, m[1], m[2] || '', true);
    if ((m = /^\/([a-zA-Z0-9_-]{46}|[a-z0-9]{55})(\/.*)?$/.exec(p))) return this.download(req, res, url, m[1], m[2] || '', false);
    if (p === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
      const body = 'Skynet portal stand-in (tests/skynet-portal)\n';
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
      return res.end(req.method === 'HEAD' ? '' : body);
    }
    throw new HttpError(404, 'Not Found', 'html');
  }

  // -- test-only endpoints ------------------------------------------------------------------

  async testEndpoint(req, res, p) {
    const json = (status, value) => {
      const body = `${JSON.stringify(value)}\n`;
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (p === '/__test/stats' && req.method === 'GET') return json(200, this.stats);
    if (p === '/__test/reset-stats' && req.method === 'POST') {
      this.resetStats();
      return json(200, this.stats);
    }
    if (p === '/__test/faults' && req.method === 'GET') return json(200, this.faults);
    if (p === '/__test/faults' && req.method === 'POST') {
      let text = '';
      for await (const chunk of bodyChunks(req)) text += chunk;
      let spec;
      try {
        spec = text.trim() ? JSON.parse(text) : {};
      } catch (err) {
        throw skydError(400, `invalid JSON: ${err.message}`);
      }
      if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw skydError(400, 'faults must be a JSON object');
      const allowed = { failPatch: 1, dropPatch: 1, afterBytes: 0, delayMs: 0 };
      for (const [key, value] of Object.entries(spec)) {
        if (!(key in allowed)) throw skydError(400, `unknown fault ${key}; known: ${Object.keys(allowed).join(', ')}`);
        if (!Number.isSafeInteger(value) || value < allowed[key]) throw skydError(400, `${key} must be an integer >= ${allowed[key]}`);
      }
      if ((spec.dropPatch === undefined) !== (spec.afterBytes === undefined)) throw skydError(400, 'dropPatch and afterBytes go together');
      this.faults = { ...spec };
      this.patchesSinceFaults = 0;
      return json(200, this.faults);
    }
    throw skydError(404, 'unknown test endpoint');
  }

  // -- POST /skynet/skyfile -----------------------------------------------------------------

  async skyfileUpload(req, res, q) {
    const { type, params } = parseHeaderParams(req.headers['content-type']);
    const multipart = type === 'multipart/form-data' || type === 'multipart/mixed';
    const mode = q.get('mode') ? parseMode(q.get('mode'), "'mode' parameter") : 0;
    const dryrun = parseBool(q, 'dryrun');
    const defaultpath = q.get('defaultpath') || '';
    const disabledefaultpath = parseBool(q, 'disabledefaultpath');
    let tryfiles;
    let errorpages;
    try {
      if (q.get('tryfiles')) tryfiles = JSON.parse(q.get('tryfiles'));
      if (q.get('errorpages')) errorpages = new Map(Object.entries(JSON.parse(q.get('errorpages'))));
    } catch (err) {
      throw skydError(400, `unable to parse 'tryfiles' or 'errorpages' parameter: ${err.message}`);
    }
    if (tryfiles !== undefined && (!Array.isArray(tryfiles) || !tryfiles.every((t) => typeof t === 'string'))) {
      throw skydError(400, "unable to parse 'tryfiles' parameter: not a list of strings");
    }
    if (defaultpath && disabledefaultpath) throw skydError(400, 'please use either defaultpath or disabledefaultpath, not both');
    if (!multipart && (defaultpath || disabledefaultpath || tryfiles || errorpages)) {
      throw skydError(400, 'defaultpath, disabledefaultpath, tryfiles and errorpages are only supported for multipart uploads');
    }
    let filename = q.get('filename') || '';
    if (!multipart && !filename) throw skydError(400, 'no filename provided');
    if (filename && !validPath(filename)) throw skydError(400, `invalid filename provided: ${JSON.stringify(filename)}`);
    if (multipart && !params.boundary) throw skydError(400, 'unable to create multipart reader: no multipart boundary param in Content-Type');

    const hasher = new sky.ChunkHasher();
    const segments = [];
    const dropFiles = () => Promise.all(segments.map((s) => fsp.rm(this.store.abs(s.file), { force: true })));
    let metadata;
    let size = 0;
    try {
      if (multipart) {
        const subfiles = new Map();
        for (const part of await this.receiveMultipart(req, params.boundary, hasher)) {
          segments.push({ file: part.file, length: part.length });
          subfiles.set(part.filename, { mode: part.mode, filename: part.filename, contenttype: part.contentType, offset: size, len: part.length });
          size += part.length;
        }
        if (!filename && subfiles.size === 1) filename = [...subfiles.keys()][0];
        if (!filename) throw skydError(400, 'no filename provided');
        if (tryfiles === undefined && !defaultpath && !disabledefaultpath) tryfiles = ['index.html'];
        metadata = sky.metadataJSON({ filename, length: size, mode, subfiles, defaultpath, disabledefaultpath, tryfiles, errorpages });
      } else {
        const file = this.store.newBlob();
        segments.push({ file, length: 0 });
        segments[0].length = size = await this.receiveRaw(req, file, hasher);
        metadata = sky.metadataJSON({ filename, length: size, mode });
      }
    } catch (err) {
      await dropFiles();
      if (err instanceof HttpError) throw err;
      throw skydError(400, `unable to parse multipart request: ${err.message}`);
    }

    const link = await this.skylinkFor(size, metadata, segments, hasher.finish());
    this.stats.skyfileUploads++;
    if (dryrun || !this.store.putSkyfile({ ...link, size, metadata: metadata.toString(), segments })) await dropFiles();
    if (!dryrun) this.stats.bytesStored += size;
    const body = `${JSON.stringify({ skylink: link.skylink, merkleroot: link.merkleroot, bitfield: link.bitfield })}\n`;
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Skynet-Skylink': link.skylink });
    res.end(body);
  }

  /** The skylink skyd gives (small files), or the deterministic placeholder (large files). */
  async skylinkFor(size, metadata, segments, chunkDigests) {
    if (!sky.fitsSmall(size, metadata)) return sky.largeSkylink(size, metadata, chunkDigests);
    return sky.smallSkylink(size, metadata, (tree) => this.store.readRange(segments, 0, size, (buf) => tree.write(buf)));
  }

  async receiveRaw(req, file, hasher) {
    const fh = await fsp.open(this.store.abs(file), 'w');
    let n = 0;
    try {
      for await (const chunk of bodyChunks(req)) {
        await fh.write(chunk);
        hasher.update(chunk);
        n += chunk.length;
      }
    } finally {
      await fh.close();
    }
    return n;
  }

  /** Every part to its own blob; returns [{filename, contentType, mode, file, length}]. */
  async receiveMultipart(req, boundary, hasher) {
    const parser = new MultipartParser(boundary);
    const parts = [];
    let fh = null;
    try {
      for await (const chunk of bodyChunks(req)) {
        for (const ev of parser.push(chunk)) {
          if (ev.type === 'part') {
            const cd = parseHeaderParams(ev.headers['content-disposition']);
            const name = cd.params.name;
            if (name !== 'file' && name !== 'files[]') {
              throw new Error("multipart file submitted under an illegal form name, allowed values are 'file' and 'files[]'");
            }
            if (!cd.params.filename) throw skydError(400, 'no filename provided');
            if (!validPath(cd.params.filename)) throw skydError(400, `invalid filename provided: ${JSON.stringify(cd.params.filename)}`);
            const part = { filename: cd.params.filename, contentType: ev.headers['content-type'] || '', length: 0,
              mode: ev.headers.mode ? parseMode(ev.headers.mode, 'part mode') : 0, file: this.store.newBlob() };
            parts.push(part);
            fh = await fsp.open(this.store.abs(part.file), 'w');
          } else if (ev.type === 'data') {
            await fh.write(ev.buf);
            hasher.update(ev.buf);
            parts[parts.length - 1].length += ev.buf.length;
          } else {
            await fh.close();
            fh = null;
          }
        }
      }
      parser.end();
    } catch (err) {
      await Promise.all(parts.map((part) => fsp.rm(this.store.abs(part.file), { force: true })));
      throw err;
    } finally {
      await fh?.close();
    }
    if (!parts.length) throw new Error('no files provided');
    return parts;
  }

  // -- TUS ----------------------------------------------------------------------------------

  absUploadUrl(req, id) {
    const host = req.headers['x-forwarded-host'] || req.headers.host || this.origin.slice('http://'.length);
    const proto = req.headers['x-forwarded-proto'] || 'http';
    return `${proto}://${host}/skynet/tus/${id}`;
  }

  async tus(req, res, id) {
    res.setHeader('Tus-Resumable', '1.0.0');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    let method = req.method;
    if (method === 'POST' && req.headers['x-http-method-override']) method = req.headers['x-http-method-override'].toUpperCase();
    if (method === 'OPTIONS') {
      res.writeHead(200, { 'Tus-Version': '1.0.0', 'Tus-Extension': TUS_EXTENSIONS, 'Content-Length': '0' });
      return res.end();
    }
    if (method !== 'GET' && req.headers['tus-resumable'] !== '1.0.0') throw tusError(412, 'unsupported version');
    if (!id) {
      if (method !== 'POST') throw tusError(405, 'Method Not Allowed');
      return this.tusCreate(req, res);
    }
    if (id.includes('/')) throw tusError(404, 'upload not found');
    if (method === 'HEAD') return this.tusHead(req, res, id);
    if (method === 'PATCH') return this.tusPatch(req, res, id);
    if (method === 'GET') throw tusError(501, 'feature not implemented');
    throw tusError(405, 'Method Not Allowed');
  }

  async tusCreate(req, res) {
    const containsChunk = req.headers['content-type'] === 'application/offset+octet-stream';
    const concat = req.headers['upload-concat'] || '';
    let partial = false;
    let partials = null;
    if (concat === 'partial') partial = true;
    else if (concat) {
      const ids = concat.startsWith('final;') ? concat.slice(6).split(' ').map((u) => u.trim()).filter(Boolean)
        .map((u) => /([^/]+)\/?$/.exec(u)?.[1]) : [];
      if (!ids.length || ids.some((x) => !x)) throw tusError(400, 'invalid Upload-Concat header');
      partials = ids;
    }
    let size;
    if (partials) {
      if (containsChunk) throw tusError(403, 'modifying a final upload is not allowed');
      size = 0;
      for (const pid of partials) {
        const p = this.store.getUpload(pid);
        if (!p) throw tusError(404, 'upload not found');
        if (!p.partial || p.offset !== p.size) throw tusError(400, 'one of the partial uploads is not finished');
        size += p.size;
      }
    } else {
      const length = req.headers['upload-length'];
      const defer = req.headers['upload-defer-length'];
      if (length !== undefined && defer !== undefined) throw tusError(400, 'provided both Upload-Length and Upload-Defer-Length');
      if (defer !== undefined) throw tusError(400, 'uploads with deferred size are not supported');
      if (!/^\d{1,15}$/.test(length ?? '')) throw tusError(400, 'missing or invalid Upload-Length header');
      size = Number(length);
    }

    // tusd's ParseMetadataHeader: "key b64,key b64,key"; invalid base64 values are skipped
    const metadata = [];
    for (const element of (req.headers['upload-metadata'] || '').split(',')) {
      const parts = element.trim().split(' ');
      if (parts.length > 2 || !parts[0]) continue;
      let value = '';
      if (parts.length === 2) {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(parts[1]) || parts[1].length % 4) continue;
        value = Buffer.from(parts[1], 'base64').toString('utf8');
      }
      const at = metadata.findIndex(([k]) => k === parts[0]);
      if (at >= 0) metadata[at][1] = value;
      else metadata.push([parts[0], value]);
    }
    const meta = Object.fromEntries(metadata);
    // skyd's NewUpload: a random name unless `filename` is given; `filetype` becomes the content type
    const filename = meta.filename ?? randomId();
    if (!validPath(filename)) throw tusError(500, `failed to create upload: invalid metadata: invalid filename ${JSON.stringify(filename)}`);
    const sm = sky.metadataJSON({ filename, length: size,
      subfiles: new Map([[filename, { filename, contenttype: meta.filetype || '', len: size }]]) });

    const info = { id: randomId(), size, offset: 0, metadata, partial, partials, chunks: [], skylink: null,
      sm: sm.toString(), created: new Date().toISOString() };
    if (!partials) await fsp.writeFile(this.store.abs(`tus/${info.id}.bin`), '');
    this.store.saveUpload(info);
    res.setHeader('Location', this.absUploadUrl(req, info.id));

    if (partials) {
      this.stats.concatenations++;
      const parts = partials.map((pid) => this.store.getUpload(pid));
      if (parts.slice(0, -1).some((p) => p.size % CHUNK !== 0)) {
        throw tusError(500, `failed to concat uploads: only last upload is allowed to be small (partial uploads must be multiples of ${CHUNK} bytes)`);
      }
      info.chunks = parts.flatMap((p) => p.chunks);
      info.offset = size;
      await this.finishUpload(info, parts.map((p) => ({ file: `tus/${p.id}.bin`, length: p.size })));
      for (const p of parts) {
        p.metadata = p.metadata.filter(([k]) => k !== 'Skylink').concat([['Skylink', info.skylink]]);
        this.store.saveUpload(p);
      }
    } else {
      this.stats.tusCreates++;
      if (containsChunk) {
        const outcome = await this.receivePatch(req, info);
        if (outcome.aborted) return undefined;
        if (outcome.error) throw tusError(500, outcome.error);
        res.setHeader('Upload-Offset', String(info.offset));
      } else if (size === 0 && !partial) {
        await this.finishUpload(info, [{ file: `tus/${info.id}.bin`, length: 0 }]);
      }
    }
    res.writeHead(201, { 'Content-Length': '0' });
    return res.end();
  }

  async tusHead(req, res, id) {
    if (this.locks.has(id)) throw tusError(423, 'file currently locked'); // tusd locks HEAD too
    const info = this.store.getUpload(id);
    if (!info) throw tusError(404, 'upload not found');
    const headers = { 'Upload-Offset': String(info.offset), 'Upload-Length': String(info.size),
      'Content-Length': String(info.size), 'Cache-Control': 'no-store' };
    if (info.partial) headers['Upload-Concat'] = 'partial';
    if (info.partials) headers['Upload-Concat'] = `final;${info.partials.map((p) => this.absUploadUrl(req, p)).join(' ')}`;
    if (info.metadata.length) {
      headers['Upload-Metadata'] = info.metadata.map(([k, v]) => (v === '' ? k : `${k} ${Buffer.from(v).toString('base64')}`)).join(',');
    }
    // nginx copies the Skylink metadata entry into this header
    const skylink = info.metadata.find(([k]) => k === 'Skylink')?.[1];
    if (skylink) headers['Skynet-Skylink'] = skylink;
    res.writeHead(200, headers);
    res.end();
  }

  async tusPatch(req, res, id) {
    if (req.headers['content-type'] !== 'application/offset+octet-stream') throw tusError(400, 'missing or invalid Content-Type header');
    const offsetHeader = req.headers['upload-offset'];
    if (!/^\d{1,15}$/.test(offsetHeader ?? '')) throw tusError(400, 'missing or invalid Upload-Offset header');
    const info = this.store.getUpload(id);
    if (!info) throw tusError(404, 'upload not found');
    if (this.locks.has(id)) throw tusError(423, 'file currently locked');
    this.locks.add(id);
    let outcome = {};
    try {
      if (info.partials) throw tusError(403, 'modifying a final upload is not allowed');
      if (Number(offsetHeader) !== info.offset) throw tusError(409, 'mismatched offset');
      const length = req.headers['content-length'];
      if (info.offset < info.size) { // a finished upload is answered without reading
        if (length !== undefined && Number(length) > info.size - info.offset) throw tusError(413, "resource's size exceeded");
        this.stats.patches++;
        const nth = ++this.patchesSinceFaults;
        if (this.faults.failPatch === nth) throw tusError(500, 'injected fault (failPatch): nothing was written');
        outcome = await this.receivePatch(req, info, this.faults.dropPatch === nth ? this.faults.afterBytes : null);
      }
    } finally {
      this.locks.delete(id);
    }
    if (outcome.drop) return req.socket.destroy();
    if (outcome.aborted) return undefined;
    if (outcome.error) throw tusError(500, outcome.error);
    res.writeHead(204, { 'Upload-Offset': String(info.offset) });
    return res.end();
  }

  /**
   * Streams one PATCH body to disk at the upload's offset, then applies skyd's WriteChunk rules:
   *  - a small upload (size + layout + metadata fits one sector, offset 0) must arrive whole in
   *    this PATCH, else nothing is kept ("unexpected EOF");
   *  - otherwise, if the bytes received are not a multiple of 40 MiB and do not finish the upload,
   *    skyd shrinks the file back to where this PATCH started (Shrink(offset / chunkSize)) and
   *    answers 500 "tus upload was interrupted - please retry" - also when the client went away.
   * `dropAfter` (fault injection): reading stops after that many bytes are written; the caller
   * destroys the connection once the outcome is recorded and the upload unlocked.
   * Returns {aborted} (client gone), {drop} and/or {error}; on success info.offset has advanced.
   */
  async receivePatch(req, info, dropAfter = null) {
    const start = info.offset;
    const remaining = info.size - start;
    const small = start === 0 && sky.fitsSmall(info.size, Buffer.from(info.sm));
    if (!small && start % CHUNK !== 0) {
      return { error: `offset is not chunk aligned - make sure chunkSize is set to a multiple of ${CHUNK} for these upload params` };
    }
    const file = this.store.abs(`tus/${info.id}.bin`);
    const hasher = new sky.ChunkHasher();
    const fh = await fsp.open(file, 'r+');
    let n = 0;
    let aborted = false;
    let drop = false;
    const reading = { drain: true };
    try {
      for await (const chunk of bodyChunks(req, reading)) {
        let buf = chunk.subarray(0, Math.max(0, Math.min(chunk.length, remaining - n)));
        drop = dropAfter !== null && n + buf.length >= dropAfter;
        if (drop) buf = buf.subarray(0, dropAfter - n);
        if (buf.length) {
          await fh.write(buf, 0, buf.length, start + n);
          hasher.update(buf);
          n += buf.length;
        }
        if (drop) {
          reading.drain = false; // stop reading; the caller destroys the connection
          break;
        }
      }
      drop ||= dropAfter !== null && n >= dropAfter; // the body ended exactly at the drop point
    } catch {
      aborted = true; // the client went away; what arrived is judged like skyd judges a short read
    } finally {
      await fh.close();
    }
    const end = start + n;
    let error = null;
    if (small && end !== info.size) error = 'unexpected EOF';
    else if (!small && n % CHUNK !== 0 && end !== info.size) error = 'tus upload was interrupted - please retry';
    if (error) {
      await fsp.truncate(file, start);
      return { aborted, drop, error };
    }
    info.offset = end;
    info.chunks.push(...hasher.finish());
    this.stats.bytesStored += n;
    if (end === info.size && !info.partial) await this.finishUpload(info, [{ file: `tus/${info.id}.bin`, length: info.size }]);
    else this.store.saveUpload(info);
    return { aborted, drop };
  }

  /** skyd's FinishUpload / ConcatUploads: the skylink, stored in the upload's metadata. */
  async finishUpload(info, segments) {
    const sm = Buffer.from(info.sm);
    const link = info.partials ? sky.largeSkylink(info.size, sm, info.chunks) : await this.skylinkFor(info.size, sm, segments, info.chunks);
    this.store.putSkyfile({ ...link, size: info.size, metadata: info.sm, segments });
    info.skylink = link.skylink;
    info.metadata = info.metadata.filter(([k]) => k !== 'Skylink').concat([['Skylink', link.skylink]]);
    this.store.saveUpload(info);
  }

  // -- downloads, metadata, pin -------------------------------------------------------------

  lookup(text) {
    let parsed;
    try {
      parsed = sky.parseSkylink(text);
    } catch (err) {
      throw skydError(400, `error parsing skylink: ${err.message}`);
    }
    const record = parsed.version === 1 ? this.store.getSkyfile(parsed.skylink) : null;
    if (!record) throw skydError(404, 'failed to fetch skylink: skylink not found on this portal');
    return record;
  }

  async metadata(req, res, text) {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw tusError(405, 'Method Not Allowed');
    const record = this.lookup(text);
    this.stats.metadata++;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(record.metadata),
      'Skynet-Skylink': record.skylink });
    res.end(req.method === 'HEAD' ? '' : record.metadata);
  }

  async pin(req, res, text, rest) {
    if (req.method !== 'POST') throw tusError(405, 'Method Not Allowed');
    if (rest && rest !== '/') throw skydError(400, 'path parameter is not supported for pinning');
    const record = this.lookup(text);
    this.stats.pins++;
    res.writeHead(204, { 'Skynet-Skylink': record.skylink });
    res.end();
  }

  async download(req, res, url, text, rawPath, attachmentRoute) {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw tusError(405, 'Method Not Allowed');
    const q = url.searchParams;
    const format = (q.get('format') || '').toLowerCase();
    if (format && !['concat', 'tar', 'targz', 'zip'].includes(format)) throw skydError(400, `unable to parse 'format' parameter: invalid format '${format}'`);
    const attachment = attachmentRoute || parseBool(q, 'attachment') === true;
    if (q.has('timeout') && !(/^\d+$/.test(q.get('timeout')) && Number(q.get('timeout')) >= 1 && Number(q.get('timeout')) <= 900)) {
      throw skydError(400, "unable to parse 'timeout' parameter: must be between 1 and 900 seconds");
    }
    if (q.has('start') !== q.has('end')) throw skydError(400, "'start' and 'end' must be given together");
    if (q.has('start') && req.headers.range) throw skydError(400, "'start' and 'end' cannot be combined with a Range header");
    const record = this.lookup(text);
    let subpath;
    try {
      subpath = decodeURIComponent(rawPath);
    } catch {
      throw skydError(400, 'failed to parse skylink path');
    }
    const md = JSON.parse(record.metadata);
    const subfiles = Object.values(md.subfiles || {});
    const isDir = subfiles.length > 1 || (subfiles.length === 1 && subfiles[0].filename !== md.filename);
    if (format) throw skydError(501, 'the portal stand-in does not build archives (format=...)');
    const root = subpath === '' || subpath === '/';
    if (isDir && subpath === '' && req.method === 'GET' && !attachment) { // skyd redirects directories to "<skylink>/"
      res.writeHead(308, { Location: `${url.pathname}/${url.search}`, 'Content-Length': '0' });
      return res.end();
    }

    // what to serve: [offset, length) of the data, its name and content type
    let file = null;
    const byName = (name) => subfiles.find((sf) => `/${sf.filename}` === (name.startsWith('/') ? name : `/${name}`));
    if (!subfiles.length) {
      if (!root) throw skydError(404, `failed to download contents for path: ${subpath}`);
      file = { offset: 0, len: md.length, filename: md.filename };
    } else if (root && !isDir) {
      file = subfiles[0];
    } else if (root) {
      if (md.defaultpath) file = byName(md.defaultpath);
      else if (!md.disabledefaultpath) {
        for (const tf of md.tryfiles || []) if (!file) file = byName(tf);
        if (!file && subfiles.length === 1) file = subfiles[0];
      }
      if (!file) throw skydError(501, 'the portal stand-in does not serve directories as archives');
    } else {
      file = byName(subpath);
      const dir = `${subpath.replace(/\/+$/, '')}/`;
      if (!file && subfiles.some((sf) => `/${sf.filename}`.startsWith(dir.startsWith('/') ? dir : `/${dir}`))) {
        throw skydError(501, 'the portal stand-in does not serve directories as archives');
      }
      if (!file) throw skydError(404, `failed to download contents for path: ${subpath}`);
    }
    const offset = file.offset || 0;
    const size = file.len || 0;
    let contentType = file.contenttype || ''; // skyd: the subfile's type when exactly one is served
    if (!contentType) {
      let head = Buffer.alloc(0);
      await this.store.readRange(record.segments, offset, offset + Math.min(size, 512), (buf) => { head = Buffer.concat([head, buf]); });
      contentType = detectContentType(file.filename || md.filename, head);
    }

    const tag = sky.etag(record.skylink, root ? '/' : subpath, format);
    const headers = { 'Skynet-Skylink': record.skylink, ETag: tag, 'Accept-Ranges': 'bytes',
      'Content-Disposition': `${attachment ? 'attachment' : 'inline'}; filename=${JSON.stringify(path.posix.basename(file.filename || md.filename))}` };
    const inm = req.headers['if-none-match'];
    if (inm && (inm.trim() === '*' || inm.split(',').map((s) => s.trim().replace(/^W\//, '')).includes(tag))) {
      res.writeHead(304, { 'Skynet-Skylink': record.skylink, ETag: tag });
      return res.end();
    }
    let range = null;
    const rangeHeader = q.has('start') ? `bytes=${q.get('start')}-${q.get('end')}` : req.headers.range;
    if (rangeHeader) {
      range = parseRange(rangeHeader, size);
      if (range === 'invalid') {
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Content-Type': 'text/plain; charset=utf-8' });
        return res.end(req.method === 'HEAD' ? '' : 'invalid range: failed to overlap\n');
      }
    }
    const [from, to] = range ?? [0, size];
    if (range) headers['Content-Range'] = `bytes ${from}-${to - 1}/${size}`;
    res.writeHead(range ? 206 : 200, { ...headers, 'Content-Type': contentType, 'Content-Length': String(to - from) });
    if (req.method === 'HEAD') {
      this.stats.heads++;
      return res.end();
    }
    this.stats.downloads++;
    await this.store.readRange(record.segments, offset + from, offset + to, async (buf) => {
      if (res.destroyed) return false;
      this.stats.bytesServed += buf.length;
      if (!res.write(buf)) await drained(res);
      return true;
    });
    return res.end();
  }

  // -- lifecycle ------------------------------------------------------------------------------

  listen(host, port) {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve(this.origin));
    });
  }

  close() {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** One range of a Range header: [start, end) | null (ignored: several ranges) | 'invalid' (416). */
function parseRange(header, size) {
  const m = /^bytes=(.*)$/i.exec(header.trim());
  if (!m) return 'invalid';
  const specs = m[1].split(',').map((s) => s.trim()).filter(Boolean);
  if (specs.length !== 1) return specs.length ? null : 'invalid';
  const r = /^(\d*)-(\d*)$/.exec(specs[0]);
  if (!r || (r[1] === '' && r[2] === '')) return 'invalid';
  if (r[1] === '') { // suffix: the last N bytes
    const n = Math.min(Number(r[2]), size);
    return n > 0 ? [size - n, size] : 'invalid';
  }
  const start = Number(r[1]);
  if (start >= size) return 'invalid';
  const end = r[2] === '' ? size : Math.min(Number(r[2]) + 1, size);
  return end > start ? [start, end] : 'invalid';
}

// ---------------------------------------------------------------------------------------------
// command line

async function main() {
  const { values } = parseArgs({ options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    'data-dir': { type: 'string' },
    'require-api-key': { type: 'string' },
    quiet: { type: 'boolean', default: false },
  } });
  const m = /^(.*):(\d+)$/.exec(values.listen);
  if (!m) throw new Error(`--listen wants HOST:PORT, not ${values.listen}`);
  const tempDir = values['data-dir'] ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'skynet-portal-'));
  const portal = new Portal({ dataDir: values['data-dir'] || tempDir, apiKey: values['require-api-key'] ?? null, quiet: values.quiet });
  const origin = await portal.listen(m[1], Number(m[2]));
  process.stdout.write(`listening ${origin}\n`);
  const stop = async () => {
    await portal.close();
    if (tempDir) fs.rmSync(tempDir, { recursive: true, force: true });
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`portal: ${err.stack || err}`);
    process.exit(1);
  });
}
