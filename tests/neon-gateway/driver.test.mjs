// Validates gateway.mjs against the OFFICIAL Neon driver (@neondatabase/serverless), plus the raw
// protocol details the driver does not look at (status codes, headers, error bodies, routes).
//
// Owns: the proof that the stand-in speaks Neon's protocol. Run: node --test tests/neon-gateway/
// It starts the gateway (as `node gateway.mjs --listen 127.0.0.1:0`) on a throwaway database of
// the machine's PostgreSQL, or of a throwaway cluster when none answers (postgres.mjs).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { neon, neonConfig, NeonDbError } from '@neondatabase/serverless';
import { ensurePostgres } from './postgres.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MIB = 1024 * 1024;

let postgres;
let database;
let gateway; // the child process
let url; // http://127.0.0.1:PORT/sql
let connectionString;
let sql;

async function startGateway(pgServer) {
  const child = spawn(process.execPath, [path.join(HERE, 'gateway.mjs'), '--listen', '127.0.0.1:0',
    '--pg-host', pgServer.host, '--pg-port', String(pgServer.port), '--quiet'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code]) => { throw new Error(`gateway exited with ${code}`); }),
  ]);
  const m = /^listening (http:\/\/127\.0\.0\.1:\d+\/sql)$/.exec(line);
  assert.ok(m, `unexpected first line from the gateway: ${line}`);
  return { child, url: m[1] };
}

/** A raw POST /sql, for what the driver hides. */
async function post(body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Neon-Connection-String': connectionString, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text ? JSON.parse(text) : undefined };
}

before(async () => {
  postgres = await ensurePostgres();
  database = await postgres.createDatabase('neon_gw_driver');
  ({ child: gateway, url } = await startGateway(postgres));
  neonConfig.fetchEndpoint = url;
  connectionString = `postgresql://postgres:pw@ep-test-123.localtest.me/${database}`;
  sql = neon(connectionString);
  await sql.query(`CREATE TABLE items (
    id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, data jsonb, blob bytea, big int8)`);
});

after(async () => {
  if (gateway) {
    gateway.kill('SIGTERM');
    const [code] = gateway.exitCode === null ? await once(gateway, 'exit') : [gateway.exitCode];
    assert.equal(code, 0, 'the gateway exits cleanly on SIGTERM');
  }
  if (database) await postgres.dropDatabase(database);
  if (postgres) await postgres.stop();
});

/** Asserts that `promise` rejects with a NeonDbError and returns it. */
async function neonError(promise) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err instanceof NeonDbError, `expected a NeonDbError, got ${err}`);
  return err;
}

describe('the official driver', () => {
  test('parameterised queries (template and conventional)', async () => {
    assert.deepEqual(await sql`SELECT ${2}::int + ${3}::int AS n, ${'héllo'}::text AS s`, [{ n: 5, s: 'héllo' }]);
    assert.deepEqual(await sql.query('SELECT $1::int * 2 AS twice, $2 AS t', [21, 'x']), [{ twice: 42, t: 'x' }]);
    assert.deepEqual(await sql.query('SELECT 1 AS a, 2 AS b', [], { arrayMode: true }), [[1, 2]]);
  });

  test('INSERT ... RETURNING with fullResults', async () => {
    const r = await sql.query('INSERT INTO items (name) VALUES ($1) RETURNING id, name', ['alpha'], { fullResults: true });
    assert.equal(r.command, 'INSERT');
    assert.equal(r.rowCount, 1);
    assert.equal(r.rows.length, 1);
    assert.equal(typeof r.rows[0].id, 'string', 'int8 stays a string');
    assert.equal(r.rows[0].name, 'alpha');
    assert.deepEqual(Object.keys(r.fields[0]),
      ['name', 'dataTypeID', 'tableID', 'columnID', 'dataTypeSize', 'dataTypeModifier', 'format']);
    assert.equal(r.fields[0].dataTypeID, 20);
    assert.ok(r.fields[0].tableID > 0);
    assert.equal(r.fields[0].columnID, 1);
    assert.equal(r.fields[0].format, 'text');
  });

  test('a multi-statement transaction() with an isolation level', async () => {
    const [iso, inserted, count] = await sql.transaction([
      sql`SELECT current_setting('transaction_isolation') AS iso`,
      sql`INSERT INTO items (name) VALUES (${'beta'}) RETURNING name`,
      sql`SELECT count(*)::int AS n FROM items WHERE name IN ('alpha', 'beta')`,
    ], { isolationLevel: 'Serializable' });
    assert.deepEqual(iso, [{ iso: 'serializable' }]);
    assert.deepEqual(inserted, [{ name: 'beta' }]);
    assert.deepEqual(count, [{ n: 2 }]);

    const [ro] = await sql.transaction([sql`SHOW transaction_read_only`], { readOnly: true });
    assert.deepEqual(ro, [{ transaction_read_only: 'on' }]);
    assert.deepEqual(await sql.transaction([]), []);
  });

  test('a unique violation mid-transaction rolls back the earlier insert', async () => {
    const err = await neonError(sql.transaction([
      sql`INSERT INTO items (name) VALUES ('gamma')`,
      sql`INSERT INTO items (name) VALUES ('alpha')`,
    ]));
    assert.equal(err.code, '23505');
    assert.equal(err.constraint, 'items_name_key');
    assert.equal(err.table, 'items');
    assert.equal(err.schema, 'public');
    assert.equal(err.detail, 'Key (name)=(alpha) already exists.');
    assert.equal(err.severity, 'ERROR');
    assert.ok(err.routine && err.file && err.line);
    assert.deepEqual(await sql`SELECT name FROM items WHERE name = 'gamma'`, []);
  });

  test('NULL, bytea, jsonb and bigint round trips', async () => {
    const blob = Buffer.from([0, 1, 2, 0xfa, 0xff]);
    const data = { a: [1, 'x', null], b: { c: true }, s: 'quote " and \\ and ü' };
    const big = 2n ** 53n + 1n;
    const [row] = await sql`INSERT INTO items (name, data, blob, big)
      VALUES (${'delta'}, ${data}, ${blob}, ${big}) RETURNING data, blob, big, NULL::text AS nothing`;
    assert.deepEqual(row.data, data);
    assert.ok(Buffer.isBuffer(row.blob));
    assert.deepEqual(row.blob, blob);
    assert.equal(row.big, '9007199254740993');
    assert.equal(row.nothing, null);
    const [back] = await sql.query('SELECT $1::text IS NULL AS isnull, $2::int8 = 9007199254740993 AS exact', [null, big]);
    assert.deepEqual(back, { isnull: true, exact: true });
  });

  test('a syntax error carries 42601 and its position', async () => {
    const err = await neonError(sql.query('SELECT 1 FROM'));
    assert.equal(err.code, '42601');
    assert.equal(err.position, '14');
    assert.match(err.message, /syntax error at end of input/);
  });

  test('two statements in one query fail with 42601', async () => {
    const err = await neonError(sql.query('SELECT 1; SELECT 2'));
    assert.equal(err.code, '42601');
    assert.equal(err.message, 'cannot insert multiple commands into a prepared statement');
  });

  test('a request body over 10 MiB gets 413', async () => {
    const err = await neonError(sql.query('SELECT length($1)', ['x'.repeat(10 * MIB + 1)]));
    assert.match(err.message, /^Server error \(HTTP status 413\): .*request is too large \(max is 10485760 bytes\)/);
  });

  test('a response over 10 MiB gets 507', async () => {
    const err = await neonError(sql`SELECT repeat('x', 1000) FROM generate_series(1, 11000)`);
    assert.match(err.message, /^Server error \(HTTP status 507\): .*response is too large \(max is 10485760 bytes\)/);
    // The limit covers a whole batch.
    const half = sql`SELECT repeat('x', 1000) FROM generate_series(1, 6000)`;
    const errBatch = await neonError(sql.transaction([half, half]));
    assert.match(errBatch.message, /HTTP status 507/);
  });

  test('a bad isolation level is refused', async () => {
    const err = await neonError(sql.transaction([sql`SELECT 1`], { isolationLevel: 'Chaotic' }));
    assert.equal(err.message, 'invalid isolation level');
    assert.equal(err.code, '');
  });

  test('an unknown role looks like a wrong password', async () => {
    const other = neon(`postgresql://nobody_here:pw@ep-test-123.localtest.me/${database}`);
    const err = await neonError(other`SELECT 1`);
    assert.equal(err.message, "password authentication failed for user 'nobody_here'");
    assert.equal(err.code, '');
  });

  test('no session state survives between requests', async () => {
    await sql`BEGIN`;
    const err = await neonError(sql`SAVEPOINT s`);
    assert.equal(err.code, '25P01', 'no transaction is left open');
    await sql`SET application_name = 'leaky'`;
    const [row] = await sql`SELECT current_setting('application_name') AS app`;
    assert.notEqual(row.app, 'leaky');
    await sql`CREATE TEMP TABLE t (x int)`;
    assert.deepEqual(await sql`SELECT to_regclass('pg_temp.t') AS t`, [{ t: null }]);
  });
});

describe('the wire protocol', () => {
  const rawHeaders = { 'Neon-Raw-Text-Output': 'true', 'Neon-Array-Mode': 'true' };

  test('raw text, array rows, command tags, headers', async () => {
    const r = await post({ query: 'SELECT $1::int8 AS a, NULL AS b, true AS c', params: ['7'] }, rawHeaders);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    assert.deepEqual(Object.keys(r.json), ['fields', 'rows', 'command', 'rowCount', 'rowAsArray']);
    assert.deepEqual(r.json.rows, [['7', null, 't']]);
    assert.equal(r.json.command, 'SELECT');
    assert.equal(r.json.rowCount, 1);
    assert.equal(r.json.rowAsArray, true);
    const empty = await post({ query: '' }, rawHeaders);
    assert.deepEqual(empty.json, { fields: [], rows: [], command: '', rowCount: null, rowAsArray: true });
    const created = await post({ query: 'CREATE TABLE IF NOT EXISTS tags (x int)' }, rawHeaders);
    assert.deepEqual([created.json.command, created.json.rowCount], ['CREATE', null]);
    const upd = await post({ query: 'UPDATE items SET big = big WHERE false' }, rawHeaders);
    assert.deepEqual([upd.json.command, upd.json.rowCount], ['UPDATE', 0]);
  });

  test('typed values and object rows when the headers are absent', async () => {
    const r = await post({
      query: "SELECT 42 AS answer, $1 AS s, $2::int[] AS arr, $3::json->'a' AS j, 1.5::float8 AS f,"
        + " 'NaN'::float8 AS n, 5::int8 AS big, ARRAY['a b', NULL, 'c\"d'] AS t, '[0:1]={1,2}'::int[] AS bounded",
      params: [42, [1, 2, 3], { a: { b: 42 } }],
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.rows, [{
      answer: 42, s: '42', arr: [1, 2, 3], j: { b: 42 }, f: 1.5, n: 'NaN', big: '5', t: ['a b', null, 'c"d'], bounded: [1, 2],
    }]);
    assert.equal(r.json.rowAsArray, false);
    const perQuery = await post({ query: 'SELECT 1 AS one', arrayMode: true });
    assert.deepEqual(perQuery.json.rows, [[1]]);
  });

  test('batch: results wrapper and echoed headers', async () => {
    const r = await post({ queries: [{ query: 'SELECT 1 AS a' }, { query: 'SHOW transaction_read_only' }] }, {
      ...rawHeaders, 'Neon-Batch-Isolation-Level': 'RepeatableRead', 'Neon-Batch-Read-Only': 'true',
      'Neon-Batch-Deferrable': 'false',
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.results.map((x) => x.rows), [[['1']], [['on']]]);
    assert.equal(r.headers.get('neon-batch-isolation-level'), 'RepeatableRead');
    assert.equal(r.headers.get('neon-batch-read-only'), 'true');
    assert.equal(r.headers.get('neon-batch-deferrable'), null);
  });

  test('error bodies have the 17 keys; non-database errors have code ""', async () => {
    const keys = ['message', 'code', 'detail', 'hint', 'position', 'internalPosition', 'internalQuery', 'severity',
      'where', 'table', 'column', 'schema', 'dataType', 'constraint', 'file', 'line', 'routine'];
    const wrongParams = await post({ query: 'SELECT $1::int', params: [] });
    assert.equal(wrongParams.status, 400);
    assert.deepEqual(Object.keys(wrongParams.json), keys);
    assert.equal(wrongParams.json.code, '08P01');
    const cases = [
      [{}, { query: 'SELECT 1' }, 'invalid header: neon-connection-string'],
      [{ 'Neon-Connection-String': 'mysql://u:p@ep.x/db' }, { query: 'SELECT 1' }, 'incorrect scheme'],
      [{ 'Neon-Connection-String': 'postgresql://u@ep.x/db' }, { query: 'SELECT 1' },
        'missing authentication credentials: required password'],
      [{ 'Neon-Connection-String': 'postgresql://u:p@127.0.0.1/db' }, { query: 'SELECT 1' }, 'missing hostname'],
      [{ 'Neon-Connection-String': connectionString }, { nothing: 1 },
        'could not parse the HTTP request body: data did not match any variant of untagged enum Payload'],
    ];
    for (const [headers, body, message] of cases) {
      const r = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
      const json = await r.json();
      assert.equal(r.status, 400, message);
      assert.deepEqual(Object.keys(json), keys);
      assert.deepEqual([json.message, json.code, json.severity, json.detail], [message, '', '', null]);
    }
    const big = await post({ query: 'SELECT 1', params: ['x'.repeat(10 * MIB)] });
    assert.equal(big.status, 413);
  });

  test('OPTIONS /sql, other routes, and the test-only endpoints', async () => {
    const opt = await fetch(url, { method: 'OPTIONS' });
    assert.equal(opt.status, 200);
    assert.equal(opt.headers.get('allow'), 'OPTIONS, POST');
    assert.equal(opt.headers.get('access-control-max-age'), '86400');
    for (const [method, where] of [['GET', url], ['POST', url.replace(/\/sql$/, '/other')]]) {
      const r = await fetch(where, { method, body: method === 'POST' ? '{}' : undefined });
      assert.equal(r.status, 400);
      assert.equal(await r.json(), 'query is not supported');
    }
    const base = url.replace(/\/sql$/, '');
    await fetch(`${base}/__test/reset-stats`, { method: 'POST' });
    await sql`SELECT 1`;
    await sql.transaction([sql`SELECT 1`, sql`SELECT 2`]);
    assert.deepEqual(await (await fetch(`${base}/__test/stats`)).json(), { requests: 2 });
    await fetch(`${base}/__test/delay`, { method: 'POST', body: JSON.stringify({ ms: 300 }) });
    const t0 = Date.now();
    await sql`SELECT 1`;
    assert.ok(Date.now() - t0 >= 300, 'the delay applies');
    await fetch(`${base}/__test/delay`, { method: 'POST', body: JSON.stringify({ ms: 0 }) });
  });
});
