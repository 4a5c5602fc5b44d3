'use strict';
// The event loop is never blocked: 200 concurrent queries in one process
// spread over backends; connect() gives an ordered, pinned session; the
// counts and events of pg.Pool.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const path = require('path');
const { usePool, startBroker, psql } = require('./helpers');
const { Pool } = require('..');

const ctx = usePool(test, { extra: ['--pool-size', '8', '--min-pool-size', '2'] });

test('200 concurrent pool.query in one process spread over backends', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const rs = await Promise.all(Array.from({ length: 200 },
    (_, i) => ctx.pool.query('select $1::int i, pg_backend_pid() pid, pg_sleep(0.01)', [i])));
  clearInterval(timer);
  assert.deepEqual(rs.map((r) => r.rows[0].i), Array.from({ length: 200 }, (_, i) => i));
  const pids = new Set(rs.map((r) => r.rows[0].pid));
  assert.ok(pids.size > 1, `all on ${pids.size} backend`);
  // the loop kept turning while they ran
  assert.ok(ticks > 0);
});

test('a script that ran its queries exits by itself', () => {
  const script = `const { Pool } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    const p = new Pool({ dir: ${JSON.stringify(ctx.br.dir)} });
    Promise.all([p.query('select 1'), p.query('select pg_sleep(0.05)')]).then(() => console.log('done'));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'done');
});

test('a throw in code run from a result is an uncaught exception, not an abort', () => {
  const script = `const { Pool } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    process.on('uncaughtException', (e) => { console.log('caught ' + e.message); process.exit(3); });
    const p = new Pool({ dir: ${JSON.stringify(ctx.br.dir)} });
    p.query('select 1').then(() => process.nextTick(() => { throw new Error('boom'); }));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 3, r.stderr);
  assert.equal(r.stdout.trim(), 'caught boom');
});

test('connect(): statements in order on one session; BEGIN ... COMMIT', async () => {
  await ctx.pool.query('drop table if exists pl_t; create table pl_t (k int)');
  const c = await ctx.pool.connect();
  // sent at once, run in order
  const ps = [c.query('begin'), c.query('insert into pl_t values (1)'), c.query('select pg_backend_pid() p'),
    c.query('insert into pl_t values (2)'), c.query('select pg_backend_pid() p')];
  const rs = await Promise.all(ps);
  assert.equal(rs[2].rows[0].p, rs[4].rows[0].p, 'one backend for the transaction');
  // isolation: another session does not see the uncommitted rows
  assert.equal((await ctx.pool.query('select count(*)::int n from pl_t')).rows[0].n, 0);
  await c.query('commit');
  assert.equal((await ctx.pool.query('select count(*)::int n from pl_t')).rows[0].n, 2);
  c.release();
});

test('release() rolls back what is open and unpins the backend', async () => {
  const c = await ctx.pool.connect();
  await c.query('begin');
  await c.query('insert into pl_t values (99)');
  const pid = (await c.query('select pg_backend_pid() p')).rows[0].p;
  c.release();
  assert.throws(() => c.release(), /already been released/);
  await assert.rejects(c.query('select 1'), /not queryable/);
  // the backend comes back idle, outside a transaction, and 99 never landed
  const ok = await require('./helpers').until(() =>
    psql(`select state from pg_stat_activity where pid = ${pid}`) === 'idle', 10000);
  assert.ok(ok, 'the backend was not returned idle');
  assert.equal((await ctx.pool.query('select count(*)::int n from pl_t where k = 99')).rows[0].n, 0);
});

test('connect() callback form with done()', async () => {
  const v = await new Promise((res, rej) => ctx.pool.connect((err, client, done) => {
    if (err) return rej(err);
    client.query('select 4 x', (e, r) => {
      done();
      return e ? rej(e) : res(r.rows[0].x);
    });
  }));
  assert.equal(v, 4);
});

test('totalCount, idleCount, waitingCount from the broker', async () => {
  assert.ok(ctx.pool.totalCount >= 2, `totalCount ${ctx.pool.totalCount}`);
  assert.ok(ctx.pool.idleCount >= 0 && ctx.pool.idleCount <= ctx.pool.totalCount);
  assert.equal(ctx.pool.waitingCount, 0);
});

test("'error' event when the broker is lost, and end()", async () => {
  const br2 = await startBroker();
  const p = new Pool({ dir: br2.dir });
  await p.query('select 1');
  const errs = [];
  p.on('error', (e) => errs.push(e));
  const pending = p.query('select pg_sleep(10)').catch((e) => e);
  await new Promise((r) => setTimeout(r, 200));
  await br2.kill();
  const e = await pending;
  assert.equal(e.code, 'PB003');
  assert.equal(errs.length, 1);
  assert.equal(errs[0].code, 'PB003');
  await p.end();
  await assert.rejects(p.query('select 1'), /after calling end/);
});
