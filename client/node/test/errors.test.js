'use strict';
// Errors are Error objects with pg's fields; broker errors carry PB codes.
const test = require('node:test');
const assert = require('node:assert/strict');
const { usePool } = require('./helpers');
const { Pool, DatabaseError } = require('..');

const ctx = usePool(test, {
  setup: async (pool) => {
    await pool.query('drop table if exists er_t; create table er_t (id int primary key, ' +
      'name text not null, qty int constraint er_qty check (qty >= 0))');
    await pool.query("insert into er_t values (1, 'a', 1)");
  },
  teardown: (pool) => pool.query('drop table er_t'),
});

test('SQLSTATE and the fields pg gives', async () => {
  await assert.rejects(ctx.pool.query("insert into er_t values (1, 'b', 1)"), (e) => {
    assert.ok(e instanceof Error);
    assert.ok(e instanceof DatabaseError);
    assert.equal(e.code, '23505');
    assert.equal(e.severity, 'ERROR');
    assert.equal(e.message, 'duplicate key value violates unique constraint "er_t_pkey"');
    assert.equal(e.detail, 'Key (id)=(1) already exists.');
    assert.equal(e.table, 'er_t');
    assert.equal(e.schema, 'public');
    assert.equal(e.constraint, 'er_t_pkey');
    return true;
  });
  await assert.rejects(ctx.pool.query('insert into er_t values (2, null, 1)'),
    (e) => e.code === '23502' && e.column === 'name');
  await assert.rejects(ctx.pool.query("insert into er_t values (3, 'c', -1)"),
    (e) => e.code === '23514' && e.constraint === 'er_qty');
  await assert.rejects(ctx.pool.query('select nosuch from er_t'),
    (e) => e.code === '42703' && e.position === '8');
  await assert.rejects(ctx.pool.query('select er_nofn(1)'),
    (e) => e.code === '42883' && /explicit type casts/.test(e.hint));
  await assert.rejects(ctx.pool.query('selec 1'), (e) => e.code === '42601' && e.position === '1');
});

test('the same fields as node-postgres for the same failures', async () => {
  const pg = require('pg');
  const m = (k) => (new RegExp(`${k}=(\\S+)`).exec(process.env.PGB_TEST_DSN) || [])[1];
  const direct = new pg.Pool({ host: m('host'), port: Number(m('port')), user: m('user'), database: m('dbname'), max: 1 });
  const keys = ['message', 'code', 'severity', 'detail', 'hint', 'position', 'where', 'schema',
    'table', 'column', 'dataType', 'constraint', 'routine'];
  try {
    for (const sql of ["insert into er_t values (1, 'b', 1)", 'select 1/0', 'select nosuch from er_t',
      "do $$ begin raise exception 'x' using detail = 'd', hint = 'h'; end $$"]) {
      const ours = await ctx.pool.query(sql).catch((e) => e);
      const theirs = await direct.query(sql).catch((e) => e);
      for (const k of keys) assert.equal(ours[k], theirs[k], `${sql}: ${k}`);
    }
  } finally {
    await direct.end();
  }
});

test('broker errors carry their PB code', async () => {
  await assert.rejects(ctx.pool.query('copy er_t to stdout'), (e) => e.code === 'PB009' && e.severity === 'ERROR');
  const bad = new Pool({ dir: '/nonexistent/pgbroker' });
  await assert.rejects(bad.query('select 1'), (e) => e.code === 'PB007' && /nonexistent/.test(e.message));
  await bad.end();
});

test('callback form, for results and for errors', async () => {
  const r = await new Promise((res, rej) => ctx.pool.query('select $1::int x', [5], (e, v) => (e ? rej(e) : res(v))));
  assert.deepEqual(r.rows, [{ x: 5 }]);
  const e = await new Promise((res) => ctx.pool.query('select 1/0', (err) => res(err)));
  assert.equal(e.code, '22012');
  const r2 = await new Promise((res, rej) => ctx.pool.query({ text: 'select 2 y' }, (err, v) => (err ? rej(err) : res(v))));
  assert.deepEqual(r2.rows, [{ y: 2 }]);
  assert.equal(ctx.pool.query('select 1', () => {}), undefined);
});

test('the connection stays usable after errors', async () => {
  for (let i = 0; i < 5; i++) await assert.rejects(ctx.pool.query('select 1/0'));
  assert.equal((await ctx.pool.query('select 3 x')).rows[0].x, 3);
});
