// Validates portal.mjs against an OFFICIAL Skynet SDK (@skynetlabs/skynet-nodejs 2.9.0, which
// embeds skynet-js 4.3.0 for downloads, metadata and pin), plus the raw protocol details the
// SDK does not look at: skyd's 40 MiB TUS rule, TUS status codes, the API key, downloads'
// headers, and every fault-injection mode. Also the skylink arithmetic (skylink.mjs) against
// the Sia merkle test vectors and skyd's bitfield examples.
//
// Owns: the proof that the stand-in speaks the portal protocol. Run: node --test tests/skynet-portal/

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as sky from './skylink.mjs';

const require = createRequire(import.meta.url);
const { SkynetClient } = require('@skynetlabs/skynet-nodejs');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MIB = 1024 * 1024;
const CHUNK = sky.CHUNK_SIZE;
const TUS = { 'Tus-Resumable': '1.0.0' };
const OCTETS = { ...TUS, 'Content-Type': 'application/offset+octet-stream' };

const started = [];
let tmp;
let portal; // the open portal: {child, url, dataDir}
let client; // the SDK against it

async function startPortal(args = [], dataDir = fs.mkdtempSync(path.join(tmp, 'data-')), listen = '127.0.0.1:0') {
  const child = spawn(process.execPath, [path.join(HERE, 'portal.mjs'), '--listen', listen,
    '--data-dir', dataDir, '--quiet', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code]) => { throw new Error(`portal exited with ${code}`); }),
  ]);
  const m = /^listening (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
  assert.ok(m, `unexpected first line from the portal: ${line}`);
  const p = { child, url: m[1], dataDir };
  started.push(p);
  return p;
}

async function stopPortal(p) {
  if (p.child.exitCode !== null) return p.child.exitCode;
  p.child.kill('SIGTERM');
  const [code] = await once(p.child, 'exit');
  return code;
}

const sha = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
const stripSia = (s) => s.replace(/^sia:(\/\/)?/, '');

async function req(url, init = {}) {
  const res = await fetch(url, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: body.toString() };
}

/** POST /skynet/tus; returns the upload URL. */
async function create(base, length, headers = {}) {
  const r = await req(`${base}/skynet/tus`, { method: 'POST', headers: { ...TUS, 'Upload-Length': String(length), ...headers } });
  assert.equal(r.status, 201, r.text);
  return r.headers.get('location');
}

const patch = (url, offset, body, headers = {}) => req(url, { method: 'PATCH', body,
  headers: { ...OCTETS, 'Upload-Offset': String(offset), ...headers } });
const head = (url, headers = TUS) => req(url, { method: 'HEAD', headers });
const faults = (base, spec) => req(`${base}/__test/faults`, { method: 'POST', body: JSON.stringify(spec) });
const stats = async (base) => JSON.parse((await req(`${base}/__test/stats`)).text);

/** The skylink skyd gives a small TUS upload (reference section 3: TUS metadata has no tryfiles). */
async function expectedSmallTusSkylink(data, filename, filetype) {
  const md = sky.metadataJSON({ filename, length: data.length,
    subfiles: new Map([[filename, { filename, contenttype: filetype, len: data.length }]]) });
  return (await sky.smallSkylink(data.length, md, async (tree) => tree.write(data))).skylink;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skynet-portal-test-'));
  portal = await startPortal();
  client = new SkynetClient(portal.url);
});

after(async () => {
  const codes = await Promise.all(started.map(stopPortal));
  fs.rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(codes, codes.map(() => 0), 'every portal exits with 0 on SIGTERM');
});

describe('skylink arithmetic', () => {
  test('Sia sector merkle roots match the sia-sdk-rs vectors', () => {
    const S = sky.SECTOR_SIZE;
    const root = (fill) => {
      const b = Buffer.alloc(S);
      fill(b);
      return sky.sectorRoot(b).toString('hex');
    };
    assert.equal(root(() => {}), '50ed59cecd5ed3ca9e65cec0797202091dbba45272dafa3faa4e27064eedd52c');
    assert.match(root((b) => { b[0] = 1; }), /^8c20a2c9.*44ab$/);
    assert.match(root((b) => { b[S - 1] = 1; }), /^d0ab6691.*373c$/);
    assert.match(root((b) => { for (let i = 0; i < S; i++) b[i] = i % 256; }), /^84d0672b.*0938$/);
    assert.equal(sky.sectorRoot().toString('hex'), root(() => {}), 'zero padding is the same as zero data');
  });

  test("v1 bitfields follow skyd's examples and round-trip", () => {
    const fetchSize = (n) => sky.parseV1Bitfield(sky.v1Bitfield(0, n)).fetchSize;
    assert.equal(fetchSize(4097), 8192);
    assert.equal(fetchSize(33000), 36864);
    assert.equal(sky.v1Bitfield(0, 4 * MIB), 7676);
    for (let bf = 0; bf < 65536; bf += 4) {
      let parsed;
      try {
        parsed = sky.parseV1Bitfield(bf);
      } catch {
        continue;
      }
      assert.equal(sky.v1Bitfield(parsed.offset, parsed.fetchSize), bf);
    }
  });

  test('metadata JSON is byte for byte what Go marshals', () => {
    const md = sky.metadataJSON({ filename: 'a<b>&.bin', length: 5,
      subfiles: new Map([['z', { filename: 'z', len: 2, offset: 3 }], ['a', { filename: 'a', contenttype: 'text/plain', len: 3 }]]),
      tryfiles: ['index.html'] });
    assert.equal(md.toString(), '{"filename":"a\\u003cb\\u003e\\u0026.bin","length":5,"subfiles":{"a":{"filename":"a",'
      + '"contenttype":"text/plain","len":3},"z":{"filename":"z","offset":3,"len":2}},"tryfiles":["index.html"]}');
  });
});

describe('official SDK (@skynetlabs/skynet-nodejs 2.9.0)', () => {
  const small = crypto.randomBytes(MIB);
  const large = crypto.randomBytes(100 * MIB);
  let smallLink;
  let largeLink;

  test('small upload (multipart, chunked request body) gives the skylink skyd computes', async () => {
    smallLink = stripSia(await client.uploadData(small, 'small.bin'));
    // reference section 5: the metadata skyd writes for this very upload
    const md = Buffer.from('{"filename":"small.bin","length":1048576,"subfiles":{"small.bin":{"filename":"small.bin",'
      + '"contenttype":"application/octet-stream","len":1048576}},"tryfiles":["index.html"]}');
    const expected = await sky.smallSkylink(small.length, md, async (tree) => tree.write(small));
    assert.equal(smallLink, expected.skylink);
  });

  test('download, ranged download, metadata and pin', async () => {
    assert.equal(sha(Buffer.from(await client.downloadData(smallLink))), sha(small));
    const ranged = await client.getFileContentBinary(smallLink, { range: 'bytes=10-19' });
    assert.deepEqual(Buffer.from(ranged.data), small.subarray(10, 20));
    assert.equal(stripSia(ranged.skylink), smallLink);
    const { metadata, skylink } = await client.getMetadata(smallLink);
    assert.equal(stripSia(skylink), smallLink);
    assert.deepEqual(metadata.subfiles['small.bin'], { filename: 'small.bin', contenttype: 'application/octet-stream', len: MIB });
    const pinned = await client.pinSkylink(smallLink);
    assert.equal(stripSia(pinned.skylink), smallLink);
  });

  test('large upload: TUS, 2 parallel partial uploads of 40 + 60 MiB, concatenation', async () => {
    await req(`${portal.url}/__test/reset-stats`, { method: 'POST' });
    largeLink = stripSia(await client.uploadData(large, 'big100.bin', { largeFileSize: 1, chunkSizeMultiplier: 1 }));
    const s = await stats(portal.url);
    assert.equal(s.tusCreates, 2);
    assert.equal(s.concatenations, 1);
    assert.equal(s.patches, 3, '40 MiB, then 40 + 20 MiB');
    assert.equal(s.skyfileUploads, 0);
    assert.equal(s.bytesStored, large.length);
    assert.equal(sha(Buffer.from(await client.downloadData(largeLink))), sha(large));
    const ranged = await client.getFileContentBinary(largeLink, { range: `bytes=${CHUNK - 10}-${CHUNK + 9}` });
    assert.deepEqual(Buffer.from(ranged.data), large.subarray(CHUNK - 10, CHUNK + 10));
    const { metadata } = await client.getMetadata(largeLink);
    assert.deepEqual(metadata, { filename: 'big100.bin', length: large.length,
      subfiles: { 'big100.bin': { filename: 'big100.bin', contenttype: 'application/octet-stream', len: large.length } } });
  });

  test('the same bytes and name through one sequential TUS upload give the same skylink', async () => {
    const again = stripSia(await client.uploadData(large, 'big100.bin',
      { largeFileSize: 1, chunkSizeMultiplier: 1, numParallelUploads: 1 }));
    assert.equal(again, largeLink);
  });

  test('small file forced through TUS takes skyd\'s small-file path', async () => {
    const data = crypto.randomBytes(5000);
    const link = stripSia(await client.uploadData(data, 'tiny.bin', { largeFileSize: 1, chunkSizeMultiplier: 1 }));
    assert.equal(link, await expectedSmallTusSkylink(data, 'tiny.bin', 'application/octet-stream'));
    assert.deepEqual(Buffer.from(await client.downloadData(link)), data);
  });

  test('directory upload (files[] parts named by relative path)', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'dir-'));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'index.html'), '<h1>hi</h1>');
    fs.writeFileSync(path.join(dir, 'sub', 'a.txt'), 'aaa');
    const link = stripSia(await client.uploadDirectory(dir, { customDirname: 'site' }));
    const sub = await req(`${portal.url}/${link}/sub/a.txt`);
    assert.equal(sub.text, 'aaa');
    const root = await req(`${portal.url}/${link}/`);
    assert.equal(root.text, '<h1>hi</h1>', 'tryfiles defaults to index.html');
    const bare = await req(`${portal.url}/${link}`, { redirect: 'manual' });
    assert.equal(bare.status, 308);
  });

  test('with --require-api-key the SDK passes its key on skyfile uploads and downloads', async () => {
    const keyed = await startPortal(['--require-api-key', 'k1']);
    const withKey = new SkynetClient(keyed.url, { skynetApiKey: 'k1' });
    const link = stripSia(await withKey.uploadData(small, 'small.bin'));
    assert.equal(link, smallLink);
    assert.equal(sha(Buffer.from(await withKey.downloadData(link))), sha(small));
    await assert.rejects(new SkynetClient(keyed.url).uploadData(small, 'small.bin'), /401/);
    await stopPortal(keyed);
  });
});

describe('raw protocol', () => {
  test('every response carries the portal headers; CORS echoes the Origin', async () => {
    for (const r of [await req(`${portal.url}/nope/nope`), await req(`${portal.url}/skynet/tus`, { method: 'POST' }),
      await req(`${portal.url}/`, { method: 'HEAD', headers: { Origin: 'https://app.example' } })]) {
      assert.equal(r.headers.get('skynet-portal-api'), portal.url);
      assert.equal(r.headers.get('skynet-server-api'), portal.url);
      assert.match(r.headers.get('access-control-expose-headers'), /Skynet-Skylink/);
    }
    const r = await req(`${portal.url}/`, { method: 'HEAD', headers: { Origin: 'https://app.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.equal(r.headers.get('access-control-allow-credentials'), 'true');
    const pre = await req(`${portal.url}/skynet/skyfile`, { method: 'OPTIONS' });
    assert.equal(pre.status, 204);
  });

  test('raw skyfile upload with ?filename, then HEAD, /file/, base32, ETag, 416, 400, 404', async () => {
    const data = Buffer.from('hello raw skyfile\n');
    const up = await req(`${portal.url}/skynet/skyfile?filename=hello.txt`, { method: 'POST', body: data,
      headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(up.status, 200);
    const { skylink, merkleroot, bitfield } = JSON.parse(up.text);
    assert.equal(up.headers.get('skynet-skylink'), skylink);
    const md = Buffer.from(`{"filename":"hello.txt","length":${data.length}}`);
    const expected = await sky.smallSkylink(data.length, md, async (tree) => tree.write(data));
    assert.deepEqual({ skylink, merkleroot, bitfield }, expected);

    const h = await req(`${portal.url}/${skylink}`, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('content-length'), String(data.length));
    assert.equal(h.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(h.headers.get('accept-ranges'), 'bytes');
    assert.equal(h.headers.get('skynet-skylink'), skylink);
    assert.equal(h.headers.get('skynet-proof'), null);
    const etag = h.headers.get('etag');
    assert.match(etag, /^"[0-9a-f]{64}"$/);
    assert.equal((await req(`${portal.url}/${skylink}`, { headers: { 'If-None-Match': etag } })).status, 304);
    assert.match((await req(`${portal.url}/file/${skylink}`)).headers.get('content-disposition'), /^attachment; filename="hello.txt"$/);
    const b32 = sky.base32hexEncode(Buffer.from(skylink, 'base64url'));
    const viaB32 = await req(`${portal.url}/${b32}`);
    assert.equal(viaB32.text, data.toString());
    assert.equal(viaB32.headers.get('skynet-skylink'), skylink);
    const tail = await req(`${portal.url}/${skylink}`, { headers: { Range: 'bytes=-5' } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers.get('content-range'), `bytes ${data.length - 5}-${data.length - 1}/${data.length}`);
    const r416 = await req(`${portal.url}/${skylink}`, { headers: { Range: `bytes=${data.length}-` } });
    assert.equal(r416.status, 416);
    assert.equal(r416.headers.get('content-range'), `bytes */${data.length}`);
    const bad = await req(`${portal.url}/Aw${'A'.repeat(44)}`); // version bits 3: unknown version
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.text).message, /malformed/);
    const unknown = await req(`${portal.url}/${'A'.repeat(46)}`);
    assert.equal(unknown.status, 404);
    assert.equal((await req(`${portal.url}/skynet/pin/${'A'.repeat(46)}`, { method: 'POST' })).status, 404);
  });

  test('multipart part under an illegal form name is refused', async () => {
    const form = new FormData();
    form.append('upload', new Blob(['x']), 'x.bin');
    const r = await req(`${portal.url}/skynet/skyfile`, { method: 'POST', body: form });
    assert.equal(r.status, 400);
    assert.match(JSON.parse(r.text).message, /illegal form name/);
  });

  test('TUS: OPTIONS, 412, 400s, 404, 409, 501, creation-with-upload, metadata with an empty value', async () => {
    const opt = await req(`${portal.url}/skynet/tus`, { method: 'OPTIONS' });
    assert.equal(opt.status, 200);
    assert.equal(opt.headers.get('tus-version'), '1.0.0');
    assert.equal(opt.headers.get('tus-extension'), 'creation,creation-with-upload,concatenation');
    const noVersion = await req(`${portal.url}/skynet/tus`, { method: 'POST', headers: { 'Upload-Length': '5' } });
    assert.equal(noVersion.status, 412);
    assert.equal(noVersion.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal((await req(`${portal.url}/skynet/tus`, { method: 'POST', headers: TUS })).status, 400);
    assert.equal((await req(`${portal.url}/skynet/tus`, { method: 'POST', headers: { ...TUS, 'Upload-Defer-Length': '1' } })).status, 400);
    assert.equal((await patch(`${portal.url}/skynet/tus/${'0'.repeat(32)}`, 0, 'x')).status, 404);

    const data = crypto.randomBytes(3000);
    const meta = `filename ${Buffer.from('c.bin').toString('base64')},filetype `;
    const r = await req(`${portal.url}/skynet/tus`, { method: 'POST', body: data,
      headers: { ...OCTETS, 'Upload-Length': String(data.length), 'Upload-Metadata': meta } });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('upload-offset'), String(data.length));
    const url = r.headers.get('location');
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/skynet\/tus\/[0-9a-f]{32}$/);
    assert.equal((await head(url, {})).status, 412, 'HEAD needs Tus-Resumable too');
    const h = await head(url);
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('upload-offset'), String(data.length));
    assert.equal(h.headers.get('upload-length'), String(data.length));
    assert.equal(h.headers.get('cache-control'), 'no-store');
    const link = h.headers.get('skynet-skylink');
    assert.equal(link, await expectedSmallTusSkylink(data, 'c.bin', ''));
    assert.equal(h.headers.get('upload-metadata'),
      `filename ${Buffer.from('c.bin').toString('base64')},filetype,Skylink ${Buffer.from(link).toString('base64')}`);
    assert.equal((await req(url)).status, 501);
    assert.equal((await patch(url, 0, 'x', { 'Content-Type': 'application/octet-stream' })).status, 400);
    assert.equal((await patch(url, 1, 'x')).status, 409);
    assert.equal((await patch(url, 0, 'x')).status, 409);
    const done = await patch(url, data.length, 'x');
    assert.equal(done.status, 204, 'a PATCH on a finished upload is answered without reading');
    assert.deepEqual((await req(`${portal.url}/${link}`)).body, data);
  });

  test('TUS small file: the first PATCH must carry the whole file', async () => {
    const url = await create(portal.url, 1000);
    const r = await patch(url, 0, Buffer.alloc(400));
    assert.equal(r.status, 500);
    assert.equal(r.text, 'unexpected EOF\n');
    assert.equal((await head(url)).headers.get('upload-offset'), '0');
    assert.equal((await patch(url, 0, Buffer.alloc(1000))).status, 204);
  });

  test("skyd's 40 MiB rule: a short non-final PATCH is rolled back and answered 500", async () => {
    const url = await create(portal.url, CHUNK + 10 * MIB);
    const r = await patch(url, 0, Buffer.alloc(MIB));
    assert.equal(r.status, 500);
    assert.equal(r.text, 'tus upload was interrupted - please retry\n');
    assert.equal((await head(url)).headers.get('upload-offset'), '0');
    const data = crypto.randomBytes(CHUNK + 10 * MIB);
    let p = await patch(url, 0, data.subarray(0, CHUNK));
    assert.equal(p.status, 204);
    assert.equal(p.headers.get('upload-offset'), String(CHUNK));
    p = await patch(url, CHUNK, data.subarray(CHUNK));
    assert.equal(p.status, 204);
    const link = (await head(url)).headers.get('skynet-skylink');
    assert.equal(sha((await req(`${portal.url}/${link}`)).body), sha(data));
  });

  test('an upload is locked while a PATCH streams into it: PATCH and HEAD get 423', async () => {
    const url = await create(portal.url, CHUNK);
    const inFlight = http.request(url, { method: 'PATCH', headers: { ...OCTETS, 'Upload-Offset': '0', 'Content-Length': String(CHUNK) } });
    const response = once(inFlight, 'response');
    inFlight.write(Buffer.alloc(MIB));
    await new Promise((resolve) => { setTimeout(resolve, 200); });
    assert.equal((await patch(url, 0, 'x')).status, 423);
    assert.equal((await head(url)).status, 423);
    inFlight.end(Buffer.alloc(CHUNK - MIB));
    const [res] = await response;
    assert.equal(res.statusCode, 204);
    res.resume();
    assert.equal((await head(url)).headers.get('upload-offset'), String(CHUNK));
  });

  test('concatenation: unfinished partial 400, unaligned partial 500, unknown 404', async () => {
    const a = await create(portal.url, 5 * MIB, { 'Upload-Concat': 'partial' });
    const b = await create(portal.url, MIB, { 'Upload-Concat': 'partial' });
    const final = (urls) => req(`${portal.url}/skynet/tus`, { method: 'POST', headers: { ...TUS, 'Upload-Concat': `final;${urls.join(' ')}` } });
    assert.equal((await final([a, b])).status, 400);
    assert.equal((await patch(a, 0, Buffer.alloc(5 * MIB))).status, 204);
    assert.equal((await patch(b, 0, Buffer.alloc(MIB))).status, 204);
    assert.equal((await head(a)).headers.get('upload-concat'), 'partial');
    const r = await final([a, b]);
    assert.equal(r.status, 500);
    assert.match(r.text, /only last upload is allowed to be small/);
    assert.equal((await final([b])).status, 201, 'the last (only) partial may be small');
    assert.equal((await final([`${portal.url}/skynet/tus/${'1'.repeat(32)}`])).status, 404);
    assert.equal((await req(`${portal.url}/skynet/tus`, { method: 'POST', headers: { ...TUS, 'Upload-Concat': 'final;' } })).status, 400);
  });

  test('--require-api-key: 401 without or with a wrong key; an open portal ignores a wrong key', async () => {
    const keyed = await startPortal(['--require-api-key', 'secret']);
    const no = await req(`${keyed.url}/skynet/tus`, { method: 'POST', headers: { ...TUS, 'Upload-Length': '1' } });
    assert.equal(no.status, 401);
    assert.equal(no.headers.get('skynet-portal-api'), keyed.url);
    assert.equal((await req(`${keyed.url}/${'A'.repeat(46)}`, { headers: { 'Skynet-Api-Key': 'wrong' } })).status, 401);
    const url = await create(keyed.url, 2, { 'Skynet-Api-Key': 'secret' });
    assert.equal((await patch(url, 0, 'ab')).status, 401, 'TUS PATCH needs the key too');
    assert.equal((await patch(url, 0, 'ab', { 'Skynet-Api-Key': 'secret' })).status, 204);
    assert.equal((await head(url, { ...TUS, 'Skynet-Api-Key': 'secret' })).status, 200);
    assert.equal((await stats(keyed.url)).unauthorized, 3, '/__test/ needs no key');
    await stopPortal(keyed);
    assert.equal((await req(`${portal.url}/`, { headers: { 'Skynet-Api-Key': 'wrong' } })).status, 200);
  });
});

describe('fault injection', () => {
  test('failPatch: the Nth following PATCH answers 500 and writes nothing', async () => {
    const data = crypto.randomBytes(CHUNK * 2 + 5);
    const url = await create(portal.url, data.length);
    assert.equal((await faults(portal.url, { failPatch: 2 })).status, 200);
    assert.equal((await patch(url, 0, data.subarray(0, CHUNK))).status, 204);
    const failed = await patch(url, CHUNK, data.subarray(CHUNK, 2 * CHUNK));
    assert.equal(failed.status, 500);
    assert.equal((await head(url)).headers.get('upload-offset'), String(CHUNK));
    assert.equal((await patch(url, CHUNK, data.subarray(CHUNK))).status, 204, 'only once');
    assert.equal(sha((await req(`${portal.url}/${(await head(url)).headers.get('skynet-skylink')}`)).body), sha(data));
  });

  test('dropPatch: connection destroyed after B bytes; whole 40 MiB chunks are kept, a torn one rolls the PATCH back', async () => {
    const data = crypto.randomBytes(CHUNK * 2 + 7);
    const url = await create(portal.url, data.length);
    await faults(portal.url, { dropPatch: 1, afterBytes: CHUNK });
    await assert.rejects(patch(url, 0, data));
    assert.equal((await head(url)).headers.get('upload-offset'), String(CHUNK), 'one whole chunk arrived');
    await faults(portal.url, { dropPatch: 1, afterBytes: 5 * MIB });
    await assert.rejects(patch(url, CHUNK, data.subarray(CHUNK)));
    assert.equal((await head(url)).headers.get('upload-offset'), String(CHUNK), 'skyd shrinks back to where the PATCH began');
    const fin = await patch(url, CHUNK, data.subarray(CHUNK));
    assert.equal(fin.status, 204);
    assert.equal(sha((await req(`${portal.url}/${(await head(url)).headers.get('skynet-skylink')}`)).body), sha(data));
    const { patches } = await stats(portal.url);
    assert.ok(patches >= 3);
  });

  test('delayMs delays every response; {} resets', async () => {
    await faults(portal.url, { delayMs: 300 });
    let t = Date.now();
    await req(`${portal.url}/`);
    assert.ok(Date.now() - t >= 290, `delayed by ${Date.now() - t} ms`);
    await faults(portal.url, {});
    t = Date.now();
    await req(`${portal.url}/`);
    assert.ok(Date.now() - t < 290);
    assert.deepEqual(JSON.parse((await req(`${portal.url}/__test/faults`)).text), {});
    assert.equal((await faults(portal.url, { bogus: 1 })).status, 400);
  });

  test('stats count and reset', async () => {
    await req(`${portal.url}/__test/reset-stats`, { method: 'POST' });
    const s = await stats(portal.url);
    assert.deepEqual(Object.values(s).filter((v) => v !== 0), []);
    await req(`${portal.url}/skynet/skyfile?filename=x`, { method: 'POST', body: 'abc' });
    assert.equal((await stats(portal.url)).skyfileUploads, 1);
    assert.equal((await stats(portal.url)).bytesStored, 3);
  });
});

describe('restart', () => {
  test('a restarted portal on the same data dir still serves skyfiles and resumes TUS uploads', async () => {
    const p = await startPortal();
    const data = crypto.randomBytes(CHUNK + 3);
    const url = await create(p.url, data.length);
    assert.equal((await patch(url, 0, data.subarray(0, CHUNK))).status, 204);
    const up = JSON.parse((await req(`${p.url}/skynet/skyfile?filename=k`, { method: 'POST', body: 'kept' })).text);
    assert.equal(await stopPortal(p), 0);
    const port = new URL(p.url).port;
    const again = await startPortal([], p.dataDir, `127.0.0.1:${port}`);
    assert.equal(again.url, p.url);
    assert.equal((await req(`${again.url}/${up.skylink}`)).text, 'kept');
    assert.equal((await head(url)).headers.get('upload-offset'), String(CHUNK));
    assert.equal((await patch(url, CHUNK, data.subarray(CHUNK))).status, 204);
  });
});
