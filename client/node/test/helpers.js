'use strict';
// A real broker for the tests, on the throwaway PostgreSQL that
// tools/run-integ.sh started (PGB_TEST_DSN). Readiness is the broker's
// --ready-fd line, never a sleep.
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = process.env.PGB_ROOT || path.resolve(__dirname, '..', '..', '..');
const DSN = process.env.PGB_TEST_DSN;

function requireDsn() {
  if (!DSN) throw new Error('PGB_TEST_DSN is not set: run through tools/run-integ.sh (make test-node)');
  return DSN;
}

// Start a broker; resolves to { dir, proc, stop(), kill() }.
// dir: the run directory of a broker that died, to start again in it.
function startBroker(extra = [], again = null) {
  requireDsn();
  const base = process.env.PGB_TEST_TMP || os.tmpdir();
  const dir = again || fs.mkdtempSync(path.join(base, 'node.'));
  const name = path.basename(dir);
  const args = ['--dir', dir, '--dsn', `${DSN} application_name=${name}`, '--ready-fd', '3', ...extra];
  const proc = spawn(path.join(ROOT, 'broker', 'pgbroker'), args,
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('broker not ready in 20 s: ' + log)), 20000);
    let line = '';
    proc.stdio[3].on('data', (d) => {
      line += d;
      if (line.startsWith('ready')) {
        clearTimeout(timer);
        proc.stdio[3].destroy();
        resolve({
          dir,
          proc,
          log: () => log,
          stop: () => new Promise((res) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return res();
            proc.once('exit', () => res());
            proc.kill('SIGTERM');
          }),
          kill: () => new Promise((res) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return res();
            proc.once('exit', () => res());
            proc.kill('SIGKILL');
          }),
        });
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited (${code}) before ready: ${log}`));
    });
  });
}

// A direct libpq-free check through psql (always installed with the server).
function psql(sql) {
  return execFileSync('psql', [requireDsn(), '-XAtqc', sql], { encoding: 'utf8' }).trim();
}

// Wait for cond() with a bound.
async function until(cond, ms = 10000, step = 10) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, step));
  }
}

// A broker and a Pool on it for the tests of one file (node:test's
// before/after); setup(pool) and teardown(pool) run around them.
function usePool(test, { extra = [], setup, teardown } = {}) {
  const { Pool } = require('..');
  const ctx = { br: null, pool: null };
  test.before(async () => {
    ctx.br = await startBroker(extra);
    ctx.pool = new Pool({ dir: ctx.br.dir });
    if (setup) await setup(ctx.pool);
  });
  test.after(async () => {
    if (teardown) await teardown(ctx.pool);
    await ctx.pool.end();
    await ctx.br.stop();
  });
  return ctx;
}

module.exports = { usePool, startBroker, psql, until, ROOT, DSN };
