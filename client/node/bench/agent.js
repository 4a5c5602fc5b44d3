'use strict';
// One benchmark agent: connect, warm up, print "ready", wait for "go" on
// stdin, then run one statement at a time for SECONDS and print
// { n, errors, lat } (latencies in microseconds) as JSON.
//   node agent.js VARIANT WORKLOAD SECONDS TARGET
// VARIANT pgbroker (TARGET: run directory) or pg (TARGET: libpq-style
// host=... port=... user=... dbname=..., a pg.Pool of max 2 per process).
const [variant, workload, seconds, target] = process.argv.slice(2);

function pgConfig(dsn) {
  const o = {};
  for (const m of dsn.matchAll(/(\w+)=(\S+)/g)) o[m[1]] = m[2];
  return { host: o.host, port: Number(o.port), user: o.user, database: o.dbname, max: 2 };
}

const pool = variant === 'pgbroker'
  ? new (require('..').Pool)({ dir: target })
  : new (require('pg').Pool)(pgConfig(target));
const SQL = workload === 'select1' ? 'SELECT $1::int'
  : 'SELECT abalance FROM nb_accounts WHERE aid = $1';
const ROWS = 100000;

async function main() {
  await pool.query(SQL, [1]);
  process.stdout.write('ready\n');
  await new Promise((res) => process.stdin.once('data', res));
  const lat = [];
  let errors = 0;
  let firstError = '';
  const end = performance.now() + Number(seconds) * 1000;
  for (;;) {
    const t0 = performance.now();
    if (t0 >= end) break;
    try {
      await pool.query(SQL, [1 + Math.floor(Math.random() * ROWS)]);
      lat.push(Math.round((performance.now() - t0) * 1000));
    } catch (e) {
      errors++;
      if (!firstError) firstError = `${e.code}: ${e.message}`;
    }
  }
  await pool.end();
  process.stdout.write(JSON.stringify({ n: lat.length, errors, firstError, lat }) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ n: 0, errors: 1, firstError: `${e.code}: ${e.message}`, lat: [] }) + '\n');
});
