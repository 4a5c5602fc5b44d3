'use strict';
// One benchmark agent: connect, warm up every workload, print "ready", then
// for each line "run WORKLOAD SECONDS" on stdin run one statement at a time
// for SECONDS and print { n, errors, firstError, cpuUs, lat } as one JSON
// line (latencies in microseconds, cpuUs this process's CPU time meanwhile);
// "end" (or the end of stdin) closes the pool and exits.
//   node agent.js VARIANT TARGET
// VARIANT pgbroker (TARGET: run directory) or pg (TARGET: libpq-style
// host=... port=... user=... dbname=..., a pg.Pool of max 2 per process).
const readline = require('readline');

const [variant, target] = process.argv.slice(2);

function pgConfig(dsn) {
  const o = {};
  for (const m of dsn.matchAll(/(\w+)=(\S+)/g)) o[m[1]] = m[2];
  return { host: o.host, port: Number(o.port), user: o.user, database: o.dbname, max: 2 };
}

const pool = variant === 'pgbroker'
  ? new (require('..').Pool)({ dir: target })
  : new (require('pg').Pool)(pgConfig(target));
const SQL = {
  select1: 'SELECT $1::int',
  'pgbench-select': 'SELECT abalance FROM nb_accounts WHERE aid = $1',
};
const ROWS = 100000;

async function run(workload, seconds) {
  const sql = SQL[workload];
  const lat = [];
  let errors = 0;
  let firstError = '';
  const cpu0 = process.cpuUsage();
  const end = performance.now() + seconds * 1000;
  for (;;) {
    const t0 = performance.now();
    if (t0 >= end) break;
    try {
      await pool.query(sql, [1 + Math.floor(Math.random() * ROWS)]);
      lat.push(Math.round((performance.now() - t0) * 1000));
    } catch (e) {
      errors++;
      if (!firstError) firstError = `${e.code}: ${e.message}`;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return { n: lat.length, errors, firstError, cpuUs: cpu.user + cpu.system, lat };
}

async function main() {
  for (const sql of Object.values(SQL)) await pool.query(sql, [1]);
  process.stdout.write('ready\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, workload, seconds] = line.split(' ');
    if (cmd !== 'run') break;
    process.stdout.write(JSON.stringify(await run(workload, Number(seconds))) + '\n');
  }
  rl.close();
  await pool.end();
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ n: 0, errors: 1, firstError: `${e.code}: ${e.message}`, cpuUs: 0, lat: [] }) + '\n');
  process.exit(1);
});
