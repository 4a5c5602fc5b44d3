'use strict';
// The broker killed mid-query: every pending promise rejects with PB003
// within a second, none hangs; the pool works again with a new broker.
const test = require('node:test');
const assert = require('node:assert/strict');
const { startBroker } = require('./helpers');
const { Pool } = require('..');

test('broker killed mid-query: every pending promise rejects with PB003 within a second', async () => {
  const br = await startBroker(['--pool-size', '4', '--min-pool-size', '4']);
  const pool = new Pool({ dir: br.dir });
  pool.on('error', () => {});
  await pool.query('select 1');
  const client = await pool.connect();
  await client.query('begin');
  // running, queued behind the pool size, and on a pinned session
  const pending = [
    ...Array.from({ length: 30 }, () => pool.query('select pg_sleep(30)')),
    client.query('select pg_sleep(30)'),
  ].map((p) => p.then(() => ({ ok: true }), (e) => ({ e, at: Date.now() })));
  await new Promise((r) => setTimeout(r, 300));
  const killedAt = Date.now();
  await br.kill();
  const out = await Promise.race([
    Promise.all(pending),
    new Promise((r) => setTimeout(() => r(null), 5000)),
  ]);
  assert.ok(out, 'some promise still pending 5 s after the kill');
  for (const o of out) {
    assert.ok(o.e, 'a statement succeeded after the broker died');
    assert.equal(o.e.code, 'PB003', o.e.message);
    assert.ok(o.at - killedAt < 1000, `rejected ${o.at - killedAt} ms after the kill`);
  }
  client.release();
  // a new broker in the same directory: the same pool reconnects
  const br2 = await startBroker([], br.dir);
  assert.equal((await pool.query('select 5 x')).rows[0].x, 5);
  const c2 = await pool.connect();
  assert.equal((await c2.query('select 6 x')).rows[0].x, 6);
  c2.release();
  await pool.end();
  await br2.stop();
});
