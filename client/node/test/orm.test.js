'use strict';
// Libraries that take a pg Pool run unchanged on a pgbroker Pool: Kysely
// (PostgresDialect) and drizzle-orm (node-postgres driver).
const test = require('node:test');
const assert = require('node:assert/strict');
const { usePool } = require('./helpers');

const ctx = usePool(test, {
  setup: (pool) => pool.query('drop table if exists orm_person; create table orm_person ' +
    '(id serial primary key, name text not null, born timestamptz, tags jsonb)'),
  teardown: (pool) => pool.query('drop table orm_person'),
});

test('Kysely: select, insert returning, transactions', async () => {
  const { Kysely, PostgresDialect, sql } = require('kysely');
  const db = new Kysely({ dialect: new PostgresDialect({ pool: ctx.pool }) });
  const ins = await db.insertInto('orm_person')
    .values({ name: 'ada', born: new Date('1815-12-10T00:00:00Z'), tags: JSON.stringify(['math']) })
    .returning(['id', 'name', 'born', 'tags']).executeTakeFirstOrThrow();
  assert.equal(ins.name, 'ada');
  assert.ok(ins.born instanceof Date);
  assert.deepEqual(ins.tags, ['math']);
  const rows = await db.selectFrom('orm_person').selectAll().where('name', '=', 'ada').execute();
  assert.equal(rows.length, 1);
  assert.equal(rows[0].id, ins.id);
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('orm_person').values({ name: 'bob' }).execute();
    await trx.updateTable('orm_person').set({ name: 'bobby' }).where('name', '=', 'bob').execute();
  });
  await assert.rejects(db.transaction().execute(async (trx) => {
    await trx.insertInto('orm_person').values({ name: 'carl' }).execute();
    throw new Error('undo');
  }), /undo/);
  const names = (await db.selectFrom('orm_person').select('name').orderBy('id').execute()).map((r) => r.name);
  assert.deepEqual(names, ['ada', 'bobby']);
  const { rows: [n] } = await sql`select count(*)::int as n from orm_person`.execute(db);
  assert.equal(n.n, 2);
  const upd = await db.updateTable('orm_person').set({ tags: JSON.stringify([]) }).executeTakeFirst();
  assert.equal(upd.numUpdatedRows, 2n);
  await db.deleteFrom('orm_person').execute();
});

test('drizzle-orm: select, insert returning, transactions', async () => {
  const { drizzle } = require('drizzle-orm/node-postgres');
  const { pgTable, serial, text, timestamp, jsonb } = require('drizzle-orm/pg-core');
  const { eq, sql } = require('drizzle-orm');
  const person = pgTable('orm_person', {
    id: serial('id').primaryKey(),
    name: text('name').notNull(),
    born: timestamp('born', { withTimezone: true }),
    tags: jsonb('tags'),
  });
  const db = drizzle(ctx.pool);
  const [ins] = await db.insert(person)
    .values({ name: 'grace', born: new Date('1906-12-09T00:00:00Z'), tags: ['navy', 'cobol'] })
    .returning();
  assert.equal(ins.name, 'grace');
  assert.ok(ins.born instanceof Date);
  assert.equal(ins.born.toISOString(), '1906-12-09T00:00:00.000Z');
  assert.deepEqual(ins.tags, ['navy', 'cobol']);
  const got = await db.select().from(person).where(eq(person.id, ins.id));
  assert.deepEqual(got[0].tags, ['navy', 'cobol']);
  await db.transaction(async (tx) => {
    await tx.insert(person).values({ name: 'linus' });
    await tx.update(person).set({ name: 'linus t' }).where(eq(person.name, 'linus'));
  });
  await assert.rejects(db.transaction(async (tx) => {
    await tx.insert(person).values({ name: 'nobody' });
    tx.rollback();
  }));
  const names = (await db.select({ name: person.name }).from(person).orderBy(person.id)).map((r) => r.name);
  assert.deepEqual(names, ['grace', 'linus t']);
  const [{ n }] = await db.select({ n: sql`count(*)::int` }).from(person);
  assert.equal(n, 2);
});
