'use strict';
// Node agents side by side: pgbroker's package, pg with a pg.Pool (max 2)
// per process straight to PostgreSQL (the original design), and pg through
// PgBouncer (transaction mode, the broker's pool size). For each agent
// count and workload the three run back to back on one PostgreSQL
// (PGB_TEST_DSN); the agents start together once all are connected.
//   node bench/nodebench.js   (env: PGB_NODE_BENCH_AGENTS=1,50,200
//   PGB_NODE_BENCH_SECONDS=5 PGB_NODE_BENCH_POOL=10; results: bench/results.md)
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { startBroker, psql } = require('../test/helpers');

const AGENTS = (process.env.PGB_NODE_BENCH_AGENTS || '1,50,200').split(',').map(Number);
const SECONDS = Number(process.env.PGB_NODE_BENCH_SECONDS || 5);
const POOL = Number(process.env.PGB_NODE_BENCH_POOL || 10);
const WORKLOADS = ['select1', 'pgbench-select'];
const DSN = process.env.PGB_TEST_DSN;
const kv = (k) => (new RegExp(`${k}=(\\S+)`).exec(DSN) || [])[1];

function findBouncer() {
  for (const d of (process.env.PATH || '').split(':').concat(['/usr/sbin', '/sbin']))
    if (fs.existsSync(path.join(d, 'pgbouncer'))) return path.join(d, 'pgbouncer');
  return null;
}

async function startBouncer(nagents) {
  const bin = findBouncer();
  if (!bin) return null;
  const dir = fs.mkdtempSync(path.join(process.env.PGB_TEST_TMP || os.tmpdir(), 'bouncer.'));
  const port = 6500 + (process.pid % 1000);
  fs.writeFileSync(path.join(dir, 'users.txt'), `"${kv('user')}" ""\n`);
  fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), `[databases]
${kv('dbname')} = host=${kv('host')} port=${kv('port')} dbname=${kv('dbname')} user=${kv('user')}
[pgbouncer]
listen_port = ${port}
listen_addr =
unix_socket_dir = ${dir}
auth_type = trust
auth_file = ${path.join(dir, 'users.txt')}
pool_mode = transaction
default_pool_size = ${POOL}
min_pool_size = ${POOL}
reserve_pool_size = 0
max_db_connections = ${POOL}
max_client_conn = ${nagents * 2 + 32}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`);
  const opts = { stdio: ['ignore', 'ignore', 'pipe'] };
  if (process.getuid() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    fs.chmodSync(dir, 0o755);
    fs.chownSync(dir, uid, gid);
    Object.assign(opts, { uid, gid });
  }
  const proc = spawn(bin, [path.join(dir, 'pgbouncer.ini')], opts);
  const target = `host=${dir} port=${port} user=${kv('user')} dbname=${kv('dbname')}`;
  const pg = require('pg');
  for (let i = 0; i < 300; i++) {
    const c = new pg.Client({ host: dir, port, user: kv('user'), database: kv('dbname') });
    try {
      await c.connect();
      await c.end();
      return { target, stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGINT'); }) };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  proc.kill('SIGKILL');
  throw new Error('pgbouncer did not start');
}

// n agents of one variant: all connected, then go together; totals.
async function run(variant, workload, n, target) {
  const agent = path.join(__dirname, 'agent.js');
  const procs = Array.from({ length: n }, () => spawn(process.execPath,
    [agent, variant === 'pgbroker' ? 'pgbroker' : 'pg', workload, String(SECONDS), target],
    { stdio: ['pipe', 'pipe', 'inherit'] }));
  const outs = procs.map((p) => {
    let buf = '';
    const ready = new Promise((res) => p.stdout.on('data', (d) => {
      buf += d;
      if (buf.startsWith('ready\n')) res();
    }));
    const done = new Promise((res) => p.on('exit', () => res(buf.split('\n')[1] || '')));
    return { p, ready, done };
  });
  // Each agent is connected, or has already ended (a failed start).
  await Promise.all(outs.map((o) => Promise.race([o.ready, o.done])));
  for (const o of outs) o.p.stdin.end('go\n');
  const lines = await Promise.all(outs.map((o) => o.done));
  let total = 0;
  let errors = 0;
  let firstError = '';
  const lat = [];
  for (const l of lines) {
    let r;
    try {
      r = JSON.parse(l);
    } catch {
      r = { n: 0, errors: 1, firstError: 'agent died', lat: [] };
    }
    total += r.n;
    errors += r.errors;
    if (!firstError && r.firstError) firstError = r.firstError;
    for (const x of r.lat) lat.push(x);
  }
  lat.sort((a, b) => a - b);
  const q = (f) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] : NaN);
  return { variant, workload, n, tps: total / SECONDS, p50: q(0.5), p99: q(0.99), errors, firstError };
}

async function main() {
  if (!DSN) throw new Error('PGB_TEST_DSN is not set: make bench-node');
  psql('drop table if exists nb_accounts; create table nb_accounts (aid int primary key, abalance int not null); ' +
    'insert into nb_accounts select g, 0 from generate_series(1, 100000) g; analyze nb_accounts');
  const br = await startBroker(['--pool-size', String(POOL), '--min-pool-size', String(POOL),
    '--max-pool-size', String(POOL)]);
  const bouncer = await startBouncer(Math.max(...AGENTS));
  const direct = `host=${kv('host')} port=${kv('port')} user=${kv('user')} dbname=${kv('dbname')}`;
  const rows = [];
  try {
    for (const n of AGENTS) {
      for (const w of WORKLOADS) {
        const set = [['pgbroker', br.dir], ['pg.Pool per process', direct]];
        if (bouncer) set.push(['pg via PgBouncer', bouncer.target]);
        const res = {};
        for (const [v, target] of set) {
          res[v] = await run(v, w, n, target);
          const r = res[v];
          process.stderr.write(`${n} agents ${w} ${v}: ${r.tps.toFixed(0)}/s p50 ${r.p50} us ` +
            `p99 ${r.p99} us errors ${r.errors} ${r.firstError}\n`);
        }
        rows.push(res);
      }
    }
  } finally {
    if (bouncer) await bouncer.stop();
    await br.stop();
    psql('drop table if exists nb_accounts');
  }
  const fmt = (r) => (r ? `${r.tps.toFixed(0)} (p50 ${(r.p50 / 1000).toFixed(2)} ms${r.errors ? `, ${r.errors} errors` : ''})` : 'skipped');
  const ratio = (a, b) => (a && b && b.tps > 0 ? (a.tps / b.tps).toFixed(2) : '-');
  let md = `| agents | workload | pgbroker (stmt/s) | pg.Pool per process | pg via PgBouncer | pgbroker / pool per process | pgbroker / PgBouncer |\n`;
  md += '| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n';
  for (const r of rows) {
    const b = r.pgbroker;
    const p = r['pg.Pool per process'];
    const g = r['pg via PgBouncer'];
    md += `| ${b.n} | ${b.workload} | ${fmt(b)} | ${fmt(p)} | ${fmt(g)} | ${ratio(b, p)} | ${ratio(b, g)} |\n`;
  }
  const head = `Node agents, ${SECONDS} s per run, pool of ${POOL} backends (broker and PgBouncer), ` +
    `each agent one statement at a time; ${os.cpus().length} cores, load average ` +
    `${os.loadavg()[0].toFixed(1)} at the end (${new Date().toISOString()}).\n\n`;
  fs.writeFileSync(path.join(__dirname, 'results.md'), head + md);
  process.stdout.write(head + md);
}

main().catch((e) => {
  process.stderr.write(`nodebench: ${e.stack}\n`);
  process.exit(1);
});
