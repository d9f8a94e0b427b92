// Skylink arithmetic for the Skynet portal stand-in (the reference notes skynet.md section 5).
//
// Owns: the v1 skylink format (bitfield with offset/fetch size, base64url and base32hex forms,
// parsing and validation as skyd does), the Sia merkle root of a 4 MiB sector (BLAKE2b-256,
// 64-byte leaves, zero padding), skyd's metadata JSON (Go json.Marshal byte for byte: field
// order, omitempty, sorted map keys, HTML escaping), the 99-byte layout and the two ways a base
// sector is built: small files (layout | metadata | data) exactly as skyd does, large files
// (layout | fanout | metadata) with a PLACEHOLDER fanout, since skyd's real fanout needs its
// Reed-Solomon 10+20 piece roots. ETags as skyd computes them.

import crypto from 'node:crypto';
import blake from 'blakejs';

export const SECTOR_SIZE = 1 << 22; // 4 MiB, also the max v1 fetch size
export const LAYOUT_SIZE = 99;
export const CHUNK_SIZE = 41943040; // (4 MiB - plain cipher overhead 0) x 10 data pieces
const SEGMENT = 64;
const LEAVES = SECTOR_SIZE / SEGMENT; // 65536
const DATA_PIECES = 10;
const PARITY_PIECES = 20;
const PLAIN_CIPHER = Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]);

// ---------------------------------------------------------------------------------------------
// hashing

export function blake2b256(...parts) {
  const ctx = blake.blake2bInit(32);
  for (const part of parts) blake.blake2bUpdate(ctx, part);
  return Buffer.from(blake.blake2bFinal(ctx));
}

const LEAF_PREFIX = Buffer.from([0]);
const NODE_PREFIX = Buffer.from([1]);
const leafHash = (segment) => blake2b256(LEAF_PREFIX, segment);
const nodeHash = (left, right) => blake2b256(NODE_PREFIX, left, right);

// Roots of all-zero subtrees by height (0 = one zero leaf), so padding costs 16 hashes, not 65536.
const ZERO_ROOTS = [leafHash(Buffer.alloc(SEGMENT))];
for (let h = 1; h <= 16; h++) ZERO_ROOTS.push(nodeHash(ZERO_ROOTS[h - 1], ZERO_ROOTS[h - 1]));

/** Streaming Sia merkle root of one sector: write() the bytes, root() pads with zeros to 4 MiB. */
export class SectorTree {
  constructor() {
    this.stack = []; // [{hash, height}], heights strictly decreasing
    this.leaves = 0;
    this.pending = Buffer.alloc(0); // < 64 bytes not yet hashed
    this.size = 0;
  }

  #push(hash, height) {
    let node = hash;
    let h = height;
    while (this.stack.length && this.stack[this.stack.length - 1].height === h) {
      node = nodeHash(this.stack.pop().hash, node);
      h++;
    }
    this.stack.push({ hash: node, height: h });
    this.leaves += 2 ** height;
  }

  write(buf) {
    this.size += buf.length;
    if (this.size > SECTOR_SIZE) throw new Error('more than one sector of data');
    let i = 0;
    if (this.pending.length) {
      i = Math.min(SEGMENT - this.pending.length, buf.length);
      this.pending = Buffer.concat([this.pending, buf.subarray(0, i)]);
      if (this.pending.length < SEGMENT) return;
      this.#push(leafHash(this.pending), 0);
      this.pending = Buffer.alloc(0);
    }
    for (; i + SEGMENT <= buf.length; i += SEGMENT) this.#push(leafHash(buf.subarray(i, i + SEGMENT)), 0);
    if (i < buf.length) this.pending = Buffer.from(buf.subarray(i));
  }

  root() {
    if (this.pending.length) {
      this.#push(leafHash(Buffer.concat([this.pending, Buffer.alloc(SEGMENT - this.pending.length)])), 0);
      this.pending = Buffer.alloc(0);
    }
    while (this.leaves < LEAVES) {
      let h = 0;
      while (h < 16 && this.leaves % 2 ** (h + 1) === 0 && this.leaves + 2 ** (h + 1) <= LEAVES) h++;
      this.#push(ZERO_ROOTS[h], h);
    }
    return this.stack[0].hash;
  }
}

export function sectorRoot(...parts) {
  const tree = new SectorTree();
  for (const part of parts) tree.write(part);
  return tree.root();
}

/** sha256 of every 40 MiB chunk of a byte stream (the placeholder fanout is derived from these). */
export class ChunkHasher {
  constructor() {
    this.digests = [];
    this.hash = null;
    this.filled = 0;
  }

  update(buf) {
    for (let i = 0; i < buf.length;) {
      this.hash ??= crypto.createHash('sha256');
      const take = Math.min(CHUNK_SIZE - this.filled, buf.length - i);
      this.hash.update(buf.subarray(i, i + take));
      this.filled += take;
      i += take;
      if (this.filled === CHUNK_SIZE) this.#close();
    }
  }

  #close() {
    this.digests.push(this.hash.digest('hex'));
    this.hash = null;
    this.filled = 0;
  }

  /** All digests, the trailing partial chunk included. */
  finish() {
    if (this.hash) this.#close();
    return this.digests;
  }
}

// ---------------------------------------------------------------------------------------------
// skylink encoding

const B32 = '0123456789abcdefghijklmnopqrstuv'; // RFC 4648 extended hex, lower case

export function base32hexEncode(buf) {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function base32hexDecode(text) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of text.toLowerCase()) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error('illegal base32 data');
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** skyd's setOffsetAndFetchSize: the v1 bitfield for a file at `offset` of `fetchSize` bytes. */
export function v1Bitfield(offset, fetchSize) {
  if (offset + fetchSize > SECTOR_SIZE) throw new Error('offset plus fetch size cannot exceed 4 MiB');
  let minFetchSize = 1 << 21;
  let offsetAlign = 1 << 19;
  while (fetchSize <= minFetchSize && offsetAlign > 1 << 12) {
    offsetAlign /= 2;
    minFetchSize /= 2;
  }
  if (offset % offsetAlign !== 0) throw new Error('offset is not aligned correctly');
  const bitwiseOffset = offset / offsetAlign;
  const fetchSizeAlign = offsetAlign > 1 << 13 ? offsetAlign / 2 : 1 << 12;
  let fs = fetchSize;
  if (offsetAlign > 1 << 12) fs -= fetchSizeAlign * 8;
  if (fs !== 0 && fs % fetchSizeAlign === 0) fs--;
  const bitwiseFetchSize = Math.floor(fs / fetchSizeAlign);
  let bitfield = bitwiseOffset;
  bitfield = (bitfield << 3) + bitwiseFetchSize;
  bitfield <<= 1;
  for (let align = 1 << 12; align < offsetAlign; align *= 2) bitfield = (bitfield << 1) + 1;
  return (bitfield << 2) & 0xffff;
}

/** skyd's validateAndParseV1Bitfield: {offset, fetchSize}, or throws. */
export function parseV1Bitfield(bitfield) {
  if ((bitfield & 3) !== 0) throw new Error('bitfield is not set to v1');
  let b = bitfield >> 2;
  if ((b & 255) === 255) throw new Error('skylink is not valid, offset and fetch size are illegal');
  let modeBits = 0;
  while ((b >> modeBits) & 1) modeBits++;
  b >>= modeBits + 1;
  const offsetAlign = 4096 * 2 ** modeBits;
  const fetchSizeAlign = modeBits > 0 ? 4096 * 2 ** (modeBits - 1) : 4096;
  let fetchSize = ((b & 7) + 1) * fetchSizeAlign;
  if (modeBits > 0) fetchSize += fetchSizeAlign * 8;
  b >>= 3;
  const offset = b * offsetAlign;
  if (offset + fetchSize > SECTOR_SIZE) throw new Error('invalid bitfield, fetching beyond the limits of the sector');
  return { offset, fetchSize };
}

export function skylinkV1(root, offset, length) {
  const bitfield = v1Bitfield(offset, length);
  const raw = Buffer.alloc(34);
  raw.writeUInt16LE(bitfield, 0);
  root.copy(raw, 2);
  return { skylink: raw.toString('base64url'), bitfield, merkleroot: root.toString('hex') };
}

/**
 * Parses a skylink as skyd's LoadString does (46 base64url or 55 base32hex characters).
 * Returns {skylink (canonical base64url), version, bitfield}; throws Error(message as skyd).
 */
export function parseSkylink(text) {
  const malformed = (why) => new Error(`failed to parse skylink - data is malformed: ${why}`);
  let raw;
  if (text.length === 46 && /^[A-Za-z0-9_-]+$/.test(text)) raw = Buffer.from(text, 'base64url');
  else if (text.length === 55) {
    try {
      raw = base32hexDecode(text);
    } catch (err) {
      throw malformed(`unable to decode skylink: ${err.message}`);
    }
  } else throw malformed('unable to decode skylink: skylink has incorrect size');
  if (raw.length !== 34) throw malformed('unable to decode skylink');
  const bitfield = raw.readUInt16LE(0);
  if ((bitfield & 3) === 0) {
    try {
      parseV1Bitfield(bitfield);
    } catch (err) {
      throw malformed(`skylink failed verification: ${err.message}`);
    }
  } else if (bitfield !== 1) throw malformed('skylink failed verification: unknown skylink version');
  return { skylink: raw.toString('base64url'), version: bitfield === 1 ? 2 : 1, bitfield };
}

// ---------------------------------------------------------------------------------------------
// metadata JSON, layout, base sectors

/** Go's encoding/json for strings: HTML-sensitive characters and U+2028/2029 escaped. */
function goString(s) {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const goKeyOrder = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Go json.Marshal of a value where Maps are Go maps (keys sorted) and objects are structs. */
function goJSON(value) {
  if (value instanceof Map) {
    const keys = [...value.keys()].sort(goKeyOrder);
    return `{${keys.map((k) => `${goString(k)}:${goJSON(value.get(k))}`).join(',')}}`;
  }
  if (Array.isArray(value)) return `[${value.map(goJSON).join(',')}]`;
  if (typeof value === 'string') return goString(value);
  if (value && typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${goString(k)}:${goJSON(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * skyd's SkyfileMetadata as Go marshals it. `subfiles` is a Map name -> {mode, filename,
 * contenttype, offset, len}; `errorpages` a Map code -> path. Empty fields are left out.
 */
export function metadataJSON({ filename, length, mode, subfiles, defaultpath, disabledefaultpath, tryfiles, errorpages }) {
  const md = { filename, length };
  if (mode) md.mode = mode;
  if (subfiles && subfiles.size) {
    md.subfiles = new Map([...subfiles].map(([name, sf]) => {
      const out = {};
      if (sf.mode) out.mode = sf.mode;
      if (sf.filename) out.filename = sf.filename;
      if (sf.contenttype) out.contenttype = sf.contenttype;
      if (sf.offset) out.offset = sf.offset;
      if (sf.len) out.len = sf.len;
      return [name, out];
    }));
  }
  if (defaultpath) md.defaultpath = defaultpath;
  if (disabledefaultpath) md.disabledefaultpath = true;
  if (tryfiles && tryfiles.length) md.tryfiles = tryfiles;
  if (errorpages && errorpages.size) md.errorpages = errorpages;
  return Buffer.from(goJSON(md));
}

export function layout({ filesize, metadataSize, fanoutSize = 0, dataPieces = 0, parityPieces = 0 }) {
  const b = Buffer.alloc(LAYOUT_SIZE);
  b[0] = 1; // version
  b.writeBigUInt64LE(BigInt(filesize), 1);
  b.writeBigUInt64LE(BigInt(metadataSize), 9);
  b.writeBigUInt64LE(BigInt(fanoutSize), 17);
  b[25] = dataPieces;
  b[26] = parityPieces;
  PLAIN_CIPHER.copy(b, 27); // key data (64 bytes) stays zero
  return b;
}

/** True when skyd stores the file inside its base sector (no fanout). */
export const fitsSmall = (size, metadata) => size + LAYOUT_SIZE + metadata.length <= SECTOR_SIZE;

/**
 * Small file, exactly as skyd: root of layout | metadata | data (zero-padded to 4 MiB), fetch
 * size = the unpadded length. `writeData(tree)` streams the data into the tree.
 */
export async function smallSkylink(size, metadata, writeData) {
  const tree = new SectorTree();
  tree.write(layout({ filesize: size, metadataSize: metadata.length }));
  tree.write(metadata);
  await writeData(tree);
  if (tree.size !== LAYOUT_SIZE + metadata.length + size) throw new Error('data length changed while hashing');
  return skylinkV1(tree.root(), 0, tree.size);
}

/**
 * Large file: layout(10+20) | fanout | metadata as skyd builds it, but the fanout is a
 * placeholder (30 x 32 bytes per 40 MiB chunk derived from the chunk's sha256), so the skylink
 * is deterministic (same bytes + same metadata -> same skylink; independent of how the upload
 * was split into PATCHes or partial uploads) yet not the one skyd would give.
 */
export function largeSkylink(size, metadata, chunkDigests) {
  const pieces = [];
  for (const digest of chunkDigests) {
    for (let p = 0; p < DATA_PIECES + PARITY_PIECES; p++) {
      pieces.push(crypto.createHash('sha256').update(Buffer.from(digest, 'hex')).update(Buffer.from([p])).digest());
    }
  }
  let fanout = Buffer.concat(pieces);
  // skyd would use a base-sector extension beyond ~170 GiB; the stand-in folds the fanout.
  if (LAYOUT_SIZE + fanout.length + metadata.length > SECTOR_SIZE) fanout = crypto.createHash('sha256').update(fanout).digest();
  const lay = layout({ filesize: size, metadataSize: metadata.length, fanoutSize: fanout.length,
    dataPieces: DATA_PIECES, parityPieces: PARITY_PIECES });
  return skylinkV1(sectorRoot(lay, fanout, metadata), 0, LAYOUT_SIZE + fanout.length + metadata.length);
}

/** skyd's download ETag: blake2b-256 of the Sia encoding of (skylink, path, format, "1"). */
export function etag(skylink, path, format) {
  const parts = [skylink, path, format, '1'].flatMap((s) => {
    const bytes = Buffer.from(s);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(bytes.length));
    return [len, bytes];
  });
  return `"${blake2b256(...parts).toString('hex')}"`;
}
