// A PostgreSQL for tests: the machine's own on 127.0.0.1:5432 when it answers, else a throwaway
// cluster (initdb into a temp dir, pg_ctl start on a free port, trust auth), stopped and removed
// by stop(). Also creates and drops uniquely named databases on it.
//
// Owns: finding/starting that PostgreSQL. The Python twin for the pytest suite is
// tests/e2e/postgres_server.py; keep the two in step.
//
// NEON_GATEWAY_THROWAWAY_PG=1 skips the machine's PostgreSQL and always starts a throwaway cluster.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 5432;

/** Resolves if `postgres` can log in to the `postgres` database there. */
async function canConnect(host, port) {
  const client = new pg.Client({ host, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 3000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin; else try PATH. */
function findBinDir() {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length) return path.join(root, versions[0], 'bin');
  try {
    return path.dirname(execFileSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).trim());
  } catch {
    throw new Error('no PostgreSQL on 127.0.0.1:5432 and no initdb to start one (apt-get install postgresql)');
  }
}

/** initdb refuses to run as root: then run everything as the `postgres` user, in a dir it owns. */
function asOwner(args) {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...args] : args;
}

function run(args, logFile) {
  const [cmd, ...rest] = asOwner(args);
  try {
    execFileSync(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (err) {
    const log = logFile && fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-4000) : '';
    throw new Error(`${args.join(' ')} failed: ${err.stderr || err.message}\n${log}`);
  }
}

async function startThrowaway() {
  const bin = findBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'neon-gw-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    fs.chownSync(dir, uid, gid);
  }
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'postgres.log');
  const port = await freePort();
  const stop = async () => {
    try {
      run([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
    } catch { /* not running */ }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    run([path.join(bin, 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '-N']);
    run([path.join(bin, 'pg_ctl'), '-D', data, '-l', log, '-w', '-t', '60', 'start',
      '-o', `-k ${dir} -h ${DEFAULT_HOST} -p ${port} -c fsync=off`], log);
  } catch (err) {
    await stop();
    throw err;
  }
  return { host: DEFAULT_HOST, port, throwaway: true, stop };
}

/**
 * The PostgreSQL to test against: {host, port, throwaway, stop(), createDatabase(prefix), dropDatabase(name)}.
 * The superuser is `postgres`, with trust auth.
 */
export async function ensurePostgres() {
  const server = process.env.NEON_GATEWAY_THROWAWAY_PG !== '1' && await canConnect(DEFAULT_HOST, DEFAULT_PORT)
    ? { host: DEFAULT_HOST, port: DEFAULT_PORT, throwaway: false, stop: async () => {} }
    : await startThrowaway();
  const admin = async (sql) => {
    const client = new pg.Client({ host: server.host, port: server.port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try { await client.query(sql); } finally { await client.end(); }
  };
  return {
    ...server,
    /** Creates a database with a fresh unique name (prefix_<hex>) and returns the name. */
    async createDatabase(prefix = 'neon_gw_test') {
      const name = `${prefix}_${crypto.randomBytes(6).toString('hex')}`;
      await admin(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      return name;
    },
    async dropDatabase(name) {
      await admin(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    },
  };
}
