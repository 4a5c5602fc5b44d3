// Compiled by test/types-decl.test.js (tsc --noEmit): the declarations
// describe the package as the README uses it, and a pgbroker Pool is
// accepted where Kysely and drizzle-orm take a pg Pool.
import { Pool, getPool, CircuitBreaker, withTransaction, batch, DatabaseError, QueryResult } from 'pgbroker';
import { Kysely, PostgresDialect } from 'kysely';
import { drizzle } from 'drizzle-orm/node-postgres';

async function main(): Promise<void> {
  const pool = new Pool({ dir: '/tmp/pgbroker' });
  const r: QueryResult<{ n: number }> = await pool.query<{ n: number }>('select $1::int n', [1]);
  const n: number = r.rows[0].n;
  const c = await pool.connect();
  await c.query({ text: 'select 1', rowMode: 'array' });
  c.release();
  const p = await getPool();
  await p.query('SELECT * FROM agents');
  await new CircuitBreaker(5, 30000).execute(() => p.query('select 1'));
  await withTransaction(async (client) => client.query('select 1'), { isolationLevel: 'SERIALIZABLE' });
  const rs = await batch(['select 1', { text: 'select $1', values: [n] }]);
  rs.forEach((x) => x.rowCount);
  try {
    await pool.query('select 1/0');
  } catch (e) {
    if (e instanceof DatabaseError) console.log(e.code, e.detail);
  }
  const k = new Kysely<{ t: { id: number } }>({ dialect: new PostgresDialect({ pool }) });
  await k.selectFrom('t').selectAll().execute();
  const d = drizzle(pool);
  void d;
  console.log(pool.totalCount, pool.idleCount, pool.waitingCount);
  await pool.end();
}
void main;
