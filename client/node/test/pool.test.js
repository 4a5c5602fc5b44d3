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

// Agents the broker in dir has registered since it started (poolstat).
function registered(dir) {
  const { ROOT } = require('./helpers');
  const r = spawnSync(path.join(ROOT, 'tools', 'poolstat'), ['--json', dir], { encoding: 'utf8' });
  return JSON.parse(r.stdout).clients.registered;
}

test('release() hands the next connect() a clean, unpinned session on the same broker connection', async () => {
  const { until } = require('./helpers');
  // one backend: the next user gets the very backend the released one had
  const br = await startBroker(['--pool-size', '1', '--min-pool-size', '1', '--max-pool-size', '1',
    '--acquire-timeout-ms', '5000']);
  const p = new Pool({ dir: br.dir });
  const held = [];
  p.on('acquire', (c) => held.push(c));
  try {
    await p.query('create table rl_t (k int)');
    const dflt = (await p.query('show statement_timeout')).rows[0].statement_timeout;
    const c1 = await p.connect();
    await c1.query("set statement_timeout = '4321s'");
    await c1.query('create temp table rl_tmp (k int)');
    await c1.query('begin');
    await c1.query('insert into rl_t values (1)');
    const pid = (await c1.query('select pg_backend_pid() p')).rows[0].p;
    const ch = c1._channel;
    const before = registered(br.dir);
    c1.release();
    // taken at once, while the reset is on its way
    const c2 = await p.connect();
    assert.equal(c2._channel, ch, 'a new broker connection was made');
    const r = (await c2.query(`select pg_backend_pid() p, current_setting('statement_timeout') st,
      (select count(*)::int from pg_class where relname = 'rl_tmp') tmp,
      (select count(*)::int from rl_t) n, now() = statement_timestamp() fresh_txn`)).rows[0];
    assert.equal(r.p, pid, 'the pool of one backend gave another backend');
    assert.equal(r.st, dflt, 'SET leaked to the next user');
    assert.equal(r.tmp, 0, 'the temporary table leaked to the next user');
    assert.equal(r.n, 0, 'the open transaction leaked (its insert is visible)');
    assert.equal(r.fresh_txn, true, 'the statement ran inside the old transaction');
    // unpinned: with c2 idle outside a transaction, the one backend serves others
    assert.equal((await p.query('select 7 x')).rows[0].x, 7);
    c2.release();
    // idle, then taken again: still the same connection
    assert.ok(await until(() => p._idle.length === 1, 10000), 'the released connection was not kept');
    const c3 = await p.connect();
    assert.equal(c3._channel, ch);
    assert.equal((await c3.query('select 8 x')).rows[0].x, 8);
    // release(err) closes it, as pg: the next connect() makes a new one
    c3.release(new Error('broken'));
    const c4 = await p.connect();
    assert.notEqual(c4._channel, ch);
    assert.equal(ch.conn, null, 'release(err) left the connection open');
    assert.equal((await c4.query('select 9 x')).rows[0].x, 9);
    c4.release();
    // the broker registered exactly one agent since c1: c4's
    assert.ok(await until(() => registered(br.dir) === before + 1, 10000),
      `agents registered since c1: ${registered(br.dir) - before}, not 1`);
    await p.query('drop table rl_t');
  } finally {
    // a failed assertion must not leave end() waiting for a client
    for (const c of held) if (!c._released) c.release();
    await p.end();
    await br.stop();
  }
});

test('connect() and release() in a script that then exits by itself', () => {
  const script = `const { Pool } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    const p = new Pool({ dir: ${JSON.stringify(ctx.br.dir)} });
    (async () => {
      const c = await p.connect();
      await c.query('select 1');
      c.release();
      const d = await p.connect();
      await d.query('select 2');
      d.release();
      console.log('done');
    })();`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'done');
});

test('waitingCount: statements waiting for a backend, from the broker', async () => {
  const { until } = require('./helpers');
  const br = await startBroker(['--pool-size', '1', '--min-pool-size', '1', '--max-pool-size', '1']);
  const p = new Pool({ dir: br.dir });
  const p2 = new Pool({ dir: br.dir }); // another agent (each has its share of the pool)
  const c = await p.connect();
  try {
    await c.query('begin');
    await c.query('select 1');       // the one backend is pinned to c
    const waiting = [p.query('select 2 x'), p2.query('select 3 x')];
    assert.ok(await until(() => p.waitingCount === 2, 10000), `waitingCount ${p.waitingCount}, not 2`);
    assert.equal(p.totalCount, 1);
    await c.query('commit');
    assert.deepEqual((await Promise.all(waiting)).map((r) => r.rows[0].x), [2, 3]);
    assert.ok(await until(() => p.waitingCount === 0, 10000), `waitingCount ${p.waitingCount}, not 0`);
  } finally {
    c.release();
    await p.end();
    await p2.end();
    await br.stop();
  }
});
