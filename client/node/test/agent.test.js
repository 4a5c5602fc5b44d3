'use strict';
// The original pool's API: getPool, query with retry, withTransaction (a
// real serialization failure between two processes), batch, parallel,
// statistics, metrics and the health monitor.
const test = require('node:test');
const assert = require('node:assert/strict');
const { fork } = require('child_process');
const path = require('path');
const { startBroker } = require('./helpers');
const pgb = require('..');

let br;
test.before(async () => {
  br = await startBroker();
  process.env.PGBROKER_DIR = br.dir;
  const pool = await pgb.getPool();
  await pool.query('drop table if exists ag_acct; create table ag_acct (id int primary key, v int not null)');
  await pool.query('insert into ag_acct values (1, 0), (2, 0)');
  await pool.query('drop table if exists ag_b; create table ag_b (k int primary key)');
});
test.after(async () => {
  const pool = await pgb.getPool();
  await pool.query('drop table ag_acct; drop table ag_b');
  await pgb.closePool();
  await br.stop();
});

test('getPool is one configured Pool; query as in the original', async () => {
  const a = await pgb.getPool();
  const b = await pgb.getPool();
  assert.equal(a, b);
  assert.ok(a instanceof pgb.Pool);
  const r = await a.query('select * from ag_acct order by id');
  assert.deepEqual(r.rows, [{ id: 1, v: 0 }, { id: 2, v: 0 }]);
  const q = await pgb.query('select $1::int + 1 n', [1]);
  assert.equal(q.rows[0].n, 2);
});

test('query retries what is safe to retry, not a permanent error', async () => {
  let calls = 0;
  const seen = [];
  await assert.rejects(pgb.query('select 1/0', [], { onRetry: () => calls++ }), (e) => e.code === '22012');
  assert.equal(calls, 0);
  // a transient, known-not-applied failure is retried: 40001 raised by hand
  const r = await pgb.withRetry(async (attempt) => {
    seen.push(attempt);
    if (attempt < 3) {
      const e = new Error('serialization'); e.code = '40001'; throw e;
    }
    return 'ok';
  }, { initialDelayMs: 5 });
  assert.equal(r, 'ok');
  assert.deepEqual(seen, [1, 2, 3]);
  // fate unknown (08007) is never retried by default
  let n = 0;
  await assert.rejects(pgb.withRetry(async () => { n++; const e = new Error('x'); e.code = '08007'; throw e; },
    { initialDelayMs: 1 }));
  assert.equal(n, 1);
  // attempts are bounded
  n = 0;
  await assert.rejects(pgb.withRetry(async () => { n++; const e = new Error('x'); e.code = '40P01'; throw e; },
    { initialDelayMs: 1, maxRetries: 4 }));
  assert.equal(n, 4);
});

test('withTransaction commits, and rolls back on a throw', async () => {
  const r = await pgb.withTransaction(async (c) => {
    await c.query('update ag_acct set v = v + 10 where id = 1');
    return (await c.query('select v from ag_acct where id = 1')).rows[0].v;
  });
  assert.equal(r, 10);
  await assert.rejects(pgb.withTransaction(async (c) => {
    await c.query('update ag_acct set v = v + 100 where id = 1');
    throw new Error('no');
  }), /no/);
  assert.equal((await pgb.query('select v from ag_acct where id = 1')).rows[0].v, 10);
  await pgb.query('update ag_acct set v = 0');
});

test('withTransaction re-runs on a real serialization failure between two processes', async () => {
  const child = path.join(__dirname, 'fixtures', 'skew.js');
  const kids = [1, 2].map((me) => fork(child, [String(me), String(3 - me)],
    { env: Object.assign({}, process.env, { PGBROKER_DIR: br.dir }) }));
  const ready = kids.map((k) => new Promise((res) => k.once('message', res)));
  await Promise.all(ready);
  kids.forEach((k) => k.send('go'));
  const out = await Promise.all(kids.map((k) => new Promise((res) => k.on('message', (m) => {
    if (m && m.done) res(m);
  }))));
  await Promise.all(kids.map((k) => new Promise((res) => (k.exitCode !== null ? res() : k.once('exit', res)))));
  for (const o of out) assert.equal(o.error, undefined, o.error);
  const attempts = out.map((o) => o.attempts).sort();
  assert.deepEqual(attempts, [1, 2], 'exactly one of the two ran again');
  const rows = (await pgb.query('select v from ag_acct order by id')).rows.map((x) => x.v);
  assert.deepEqual(rows, [1, 1], 'each committed exactly once');
});

test('batch: in order, as one transaction; a failure names its statement and applies nothing', async () => {
  const rs = await pgb.batch(['insert into ag_b values (1)', { text: 'insert into ag_b values ($1) returning k', values: [2] },
    'select count(*)::int n from ag_b']);
  assert.equal(rs.length, 3);
  assert.deepEqual(rs[1].rows, [{ k: 2 }]);
  assert.equal(rs[2].rows[0].n, 2);
  await assert.rejects(pgb.batch(['insert into ag_b values (3)', 'insert into ag_b values (1)', 'select 1']), (e) => {
    assert.equal(e.code, '23505');
    assert.equal(e.index, 1);
    assert.match(e.message, /batch statement 2 of 3 failed/);
    return true;
  });
  assert.equal((await pgb.query('select count(*)::int n from ag_b')).rows[0].n, 2, 'the failed batch applied nothing');
});

test('parallel: concurrently, results in order', async () => {
  const rs = await pgb.parallel(Array.from({ length: 6 }, (_, i) => ({ text: 'select $1::int i, pg_sleep(0.2)', values: [i] })));
  assert.deepEqual(rs.map((r) => r.rows[0].i), [0, 1, 2, 3, 4, 5]);
  await assert.rejects(pgb.parallel(['select 1', 'select 1/0']), (e) => e.code === '22012');
});

test('getQueryStats, getMetrics and the health monitor', async () => {
  pgb.resetQueryStats();
  await pgb.query('select 1');
  await pgb.query('select 1/0').catch(() => {});
  const s = pgb.getQueryStats();
  assert.deepEqual(s, { total: 2, failed: 1, successRate: 0.5 });
  const m = pgb.getMetrics();
  assert.ok(m.totalCount >= 1);
  assert.equal(m.queries.total, 2);
  const mon = pgb.enableHealthMonitoring(20);
  assert.ok(mon instanceof pgb.PoolHealthMonitor);
  assert.equal(pgb.getHealthMonitor(), mon);
  const h = mon.getHealth();
  for (const k of ['total', 'idle', 'waiting', 'healthy', 'utilizationPercent']) assert.ok(k in h, k);
  assert.ok(h.timestamp instanceof Date);
  // this broker has seen failures on purpose: its verdict is the broker's own
  const c = mon.checkHealth();
  assert.ok(['healthy', 'degraded', 'unhealthy'].includes(c.status));
  assert.equal(c.status === 'healthy', c.reasons.length === 0, JSON.stringify(c));
  assert.equal(c.reasons.length, c.recommendations.length);
  // a broker that has seen none is healthy
  const br2 = await startBroker();
  try {
    const p2 = new pgb.Pool({ dir: br2.dir });
    const m2 = new pgb.PoolHealthMonitor(p2);
    // a statement that waits for the first backend to connect counts as a
    // wait for a backend (degraded when that is slow, on a loaded machine)
    await require('./helpers').until(() => m2.getHealth().idle >= 1, 10000);
    await p2.query('select 1');
    await p2.end();
    // until its first health sample the broker is "starting", not healthy
    await require('./helpers').until(() => m2.checkHealth().status === 'healthy', 10000);
    const c2 = m2.checkHealth();
    assert.equal(m2.getHealth().healthy, true, JSON.stringify(c2));
    assert.equal(c2.status, 'healthy', JSON.stringify(c2));
    assert.deepEqual(c2.reasons, []);
  } finally {
    await br2.stop();
  }
  mon.recordQuery(5, true);
  await require('./helpers').until(() => mon.getHistory().length >= 5, 5000);
  assert.ok(mon.getHistory().length >= 5);
  assert.ok(['improving', 'stable', 'degrading'].includes(mon.getTrend()));
  pgb.disableHealthMonitoring();
  assert.equal(mon.isMonitoring(), false);
  // no broker: unhealthy with a reason
  const none = new pgb.PoolHealthMonitor({ options: { dir: '/nonexistent/pgb' } }).checkHealth();
  assert.equal(none.status, 'unhealthy');
  assert.ok(none.reasons.length > 0);
});

test('CircuitBreaker: closed, open after the threshold, half-open after the reset', async () => {
  const cb = new pgb.CircuitBreaker(3, 100);
  const fail = () => Promise.reject(Object.assign(new Error('down'), { code: '08006' }));
  assert.equal(cb.getState(), 'closed');
  for (let i = 0; i < 3; i++) await assert.rejects(cb.execute(fail), /down/);
  assert.equal(cb.getState(), 'open');
  await assert.rejects(cb.execute(() => Promise.resolve(1)), (e) => e.code === 'PB002');
  await require('./helpers').until(() => cb.getState() === 'half-open', 2000);
  assert.equal(cb.getState(), 'half-open');
  await assert.rejects(cb.execute(fail), /down/);
  assert.equal(cb.getState(), 'open');
  await require('./helpers').until(() => cb.getState() === 'half-open', 2000);
  assert.equal(await cb.execute(() => pgb.query('select 1 x').then((r) => r.rows[0].x)), 1);
  assert.equal(cb.getState(), 'closed');
});
