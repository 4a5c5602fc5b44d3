'use strict';
// Values convert exactly as node-postgres converts them (pg-types by OID).
const test = require('node:test');
const assert = require('node:assert/strict');
const { usePool } = require('./helpers');
const { types } = require('..');

const ctx = usePool(test);

test('every mapping of pg, with the column type OIDs', async () => {
  const r = await ctx.pool.query(`select 7::int4 i4, 3::int2 i2, 9007199254740993::int8 i8,
    1.25::numeric n, 1.5::float8 f8, 2.5::float4 f4, true b, false b2, 'txt'::text t,
    '{"a":[1,2]}'::jsonb jb, '{"b":null}'::json j, '2024-01-02 03:04:05.678+00'::timestamptz tz,
    '\\xdeadbeef'::bytea by, array[1,2,3]::int4[] ai, array['a','b,c',null]::text[] at,
    array[[1,2],[3,4]]::int4[] a2, null::int4 ni, null::text nt, null::jsonb nj,
    '2024-05-06'::date d, 'f47ac10b-58cc-4372-a567-0e02b2c3d479'::uuid u, array[true,false] ab`);
  const row = r.rows[0];
  assert.equal(row.i4, 7);
  assert.equal(row.i2, 3);
  assert.equal(row.i8, '9007199254740993');
  assert.equal(row.n, '1.25');
  assert.equal(row.f8, 1.5);
  assert.equal(row.f4, 2.5);
  assert.equal(row.b, true);
  assert.equal(row.b2, false);
  assert.equal(row.t, 'txt');
  assert.deepEqual(row.jb, { a: [1, 2] });
  assert.deepEqual(row.j, { b: null });
  assert.ok(row.tz instanceof Date);
  assert.equal(row.tz.toISOString(), '2024-01-02T03:04:05.678Z');
  assert.ok(Buffer.isBuffer(row.by));
  assert.equal(row.by.toString('hex'), 'deadbeef');
  assert.deepEqual(row.ai, [1, 2, 3]);
  assert.deepEqual(row.at, ['a', 'b,c', null]);
  assert.deepEqual(row.a2, [[1, 2], [3, 4]]);
  assert.equal(row.ni, null);
  assert.equal(row.nt, null);
  assert.equal(row.nj, null);
  assert.ok(row.d instanceof Date);
  assert.equal(row.u, 'f47ac10b-58cc-4372-a567-0e02b2c3d479');
  assert.deepEqual(row.ab, [true, false]);
  const byName = Object.fromEntries(r.fields.map((f) => [f.name, f.dataTypeID]));
  assert.deepEqual([byName.i4, byName.i8, byName.n, byName.b, byName.jb, byName.j, byName.tz,
    byName.by, byName.ai, byName.at], [23, 20, 1700, 16, 3802, 114, 1184, 17, 1007, 1009]);
  assert.equal(r.command, 'SELECT');
  assert.equal(r.rowCount, 1);
});

test('the same values as node-postgres gives for the same statement', async () => {
  const pg = require('pg');
  const direct = new pg.Pool({ connectionString: undefined, host: dsnPart('host'),
    port: Number(dsnPart('port')), user: dsnPart('user'), database: dsnPart('dbname'), max: 1 });
  const sql = `select 1::int4 a, 2::int8 b, 3.5::numeric c, now()::timestamptz d, '{1,NULL}'::int[] e,
    '{"k":"v"}'::json f, '\\x00ff'::bytea g, 'a'::char(3) h, interval '1 day 2 hours' i, null::bool j`;
  try {
    const ours = (await ctx.pool.query(sql)).rows[0];
    const theirs = (await direct.query(sql)).rows[0];
    delete ours.d;
    delete theirs.d;
    assert.deepEqual(JSON.parse(JSON.stringify(ours)), JSON.parse(JSON.stringify(theirs)));
    assert.deepEqual(ours.g, theirs.g);
  } finally {
    await direct.end();
  }
});

function dsnPart(key) {
  const m = new RegExp(`${key}=(\\S+)`).exec(process.env.PGB_TEST_DSN);
  return m ? m[1] : undefined;
}

test('parameters: numbers, strings, NULL, Date, Buffer, arrays, objects', async () => {
  const d = new Date('2020-02-03T04:05:06.789Z');
  const r = await ctx.pool.query(
    'select $1::int a, $2::text b, $3::text c, $4::timestamptz d, $5::bytea e, $6::int[] f, $7::jsonb g, $8::text[] h, $9::bool i',
    [42, 'x\'"\\y', null, d, Buffer.from([1, 2, 255]), [1, null, 3], { k: [1, 'two'] }, ['a"b', 'c\\d', null], true]);
  const row = r.rows[0];
  assert.equal(row.a, 42);
  assert.equal(row.b, 'x\'"\\y');
  assert.equal(row.c, null);
  assert.equal(row.d.getTime(), d.getTime());
  assert.deepEqual([...row.e], [1, 2, 255]);
  assert.deepEqual(row.f, [1, null, 3]);
  assert.deepEqual(row.g, { k: [1, 'two'] });
  assert.deepEqual(row.h, ['a"b', 'c\\d', null]);
  assert.equal(row.i, true);
});

test("rowMode 'array' and the query's own types", async () => {
  const r = await ctx.pool.query({ text: 'select 1::int4 a, $1::text b', values: ['z'], rowMode: 'array' });
  assert.deepEqual(r.rows, [[1, 'z']]);
  assert.deepEqual(r.fields.map((f) => f.name), ['a', 'b']);
  const custom = {
    getTypeParser: (oid, fmt) => (oid === 23 ? (s) => `int:${s}` : types.getTypeParser(oid, fmt)),
  };
  const r2 = await ctx.pool.query({ text: 'select 5::int4 a, 6::int8 b', types: custom });
  assert.deepEqual(r2.rows, [{ a: 'int:5', b: '6' }]);
});

test('a big result: 100000 rows, and a wide value', async () => {
  const r = await ctx.pool.query('select g, md5(g::text) h from generate_series(1, 100000) g');
  assert.equal(r.rows.length, 100000);
  assert.equal(r.rowCount, 100000);
  assert.equal(r.rows[99999].g, 100000);
  assert.equal(r.rows[0].h, 'c4ca4238a0b923820dcc509a6f75849b');
  const w = await ctx.pool.query("select repeat('x', 5000000) w");
  assert.equal(w.rows[0].w.length, 5000000);
});

test('commands: rowCount and command as pg reports them', async () => {
  const c = await ctx.pool.connect();
  try {
    await c.query('create temp table ty (k int, v text)');
    const ins = await c.query("insert into ty select g, 'v' from generate_series(1, 3) g");
    assert.equal(ins.command, 'INSERT');
    assert.equal(ins.rowCount, 3);
    assert.equal(ins.oid, 0);
    const up = await c.query('update ty set v = $1 where k > 1', ['w']);
    assert.equal(up.command, 'UPDATE');
    assert.equal(up.rowCount, 2);
    const ret = await c.query("insert into ty values (9, 'n') returning k, v");
    assert.deepEqual(ret.rows, [{ k: 9, v: 'n' }]);
    const empty = await c.query('select * from ty where false');
    assert.deepEqual(empty.rows, []);
    assert.equal(empty.rowCount, 0);
    assert.equal(empty.fields.length, 2);
  } finally {
    c.release();
  }
});

test("the Pool's own types, as pg's types option, for its queries and its clients", async () => {
  const { Pool } = require('..');
  const custom = {
    getTypeParser: (oid, fmt) => (oid === 20 ? (s) => BigInt(s) : types.getTypeParser(oid, fmt)),
  };
  const p = new Pool({ dir: ctx.br.dir, types: custom });
  try {
    assert.deepEqual((await p.query('select 9007199254740993::int8 b, 1::int4 i')).rows,
      [{ b: 9007199254740993n, i: 1 }]);
    const c = await p.connect();
    try {
      assert.equal((await c.query('select 2::int8 b')).rows[0].b, 2n);
      // a query's own types win over the Pool's
      assert.equal((await c.query({ text: 'select 3::int8 b', types })).rows[0].b, '3');
    } finally {
      c.release();
    }
    // another Pool keeps pg's defaults
    assert.equal((await ctx.pool.query('select 4::int8 b')).rows[0].b, '4');
  } finally {
    await p.end();
  }
});
