'use strict';
// Node agents side by side: pgbroker's package, pg with a pg.Pool (max 2)
// per process straight to PostgreSQL (the original design), and pg through
// PgBouncer (transaction mode, the broker's pool size), on one PostgreSQL
// (PGB_TEST_DSN). For each agent count the variants take turns in rounds
// (the order rotates each round), so that a machine whose load drifts
// weighs on all of them alike; each round starts the agents afresh, and
// they start a workload together once all are connected. Besides
// statements per second and latency, the CPU time each statement cost in
// the agents, in the pooler (broker or PgBouncer) and in PostgreSQL.
//   node bench/nodebench.js   (env: PGB_NODE_BENCH_AGENTS=1,50,200
//   PGB_NODE_BENCH_SECONDS=3 (per workload and round) PGB_NODE_BENCH_ROUNDS=3
//   PGB_NODE_BENCH_POOL=10; writes bench/results.md)
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { startBroker, psql } = require('../test/helpers');

const AGENTS = (process.env.PGB_NODE_BENCH_AGENTS || '1,50,200').split(',').map(Number);
const SECONDS = Number(process.env.PGB_NODE_BENCH_SECONDS || 3);
const ROUNDS = Number(process.env.PGB_NODE_BENCH_ROUNDS || 3);
const POOL = Number(process.env.PGB_NODE_BENCH_POOL || 10);
const WORKLOADS = ['select1', 'pgbench-select'];
const DSN = process.env.PGB_TEST_DSN;
const kv = (k) => (new RegExp(`${k}=(\\S+)`).exec(DSN) || [])[1];
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));

// CPU time (us) of a process, with its reaped children's when kids is set.
function procCpu(pid, kids) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const t = Number(f[11]) + Number(f[12]) + (kids ? Number(f[13]) + Number(f[14]) : 0);
    return { ppid: Number(f[1]), us: t * TICK_US };
  } catch {
    return { ppid: -1, us: 0 };
  }
}

// PostgreSQL's CPU time: the postmaster, its live children, and those gone.
function pgCpu() {
  const pm = Number(fs.readFileSync(path.join(process.env.PGB_TEST_PGDIR, 'data', 'postmaster.pid'),
    'utf8').split('\n')[0]);
  let us = procCpu(pm, true).us;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const p = procCpu(Number(d), true);
    if (p.ppid === pm) us += p.us;
  }
  return us;
}

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
      return { target, pid: proc.pid, stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGINT'); }) };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  proc.kill('SIGKILL');
  throw new Error('pgbouncer did not start');
}

// n agent processes of one variant, connected and warmed up.
async function startAgents(variant, n, target) {
  const script = path.join(__dirname, 'agent.js');
  const agents = Array.from({ length: n }, () => {
    const p = spawn(process.execPath, [script, variant === 'pgbroker' ? 'pgbroker' : 'pg', target],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = [];
    const waiters = [];
    const push = (l) => (waiters.length ? waiters.shift()(l) : lines.push(l));
    readline.createInterface({ input: p.stdout }).on('line', push);
    const exited = new Promise((res) => p.on('exit', () => { res(); push(null); }));
    const next = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((res) => waiters.push(res)));
    return { p, next, exited };
  });
  // Each agent is ready, or has already ended (a failed start: its runs count errors).
  await Promise.all(agents.map((a) => a.next()));
  return {
    async run(workload) {
      for (const a of agents) if (a.p.exitCode === null) a.p.stdin.write(`run ${workload} ${SECONDS}\n`);
      const outs = await Promise.all(agents.map((a) => (a.p.exitCode === null ? a.next() : null)));
      return outs.map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return { n: 0, errors: 1, firstError: 'agent died', cpuUs: 0, lat: [] };
        }
      });
    },
    async end() {
      for (const a of agents) a.p.stdin.end('end\n');
      await Promise.all(agents.map((a) => a.exited));
    },
  };
}

const VARIANTS = ['pgbroker', 'pg.Pool per process', 'pg via PgBouncer'];

// The tables for the agent counts done so far (results.md is rewritten
// after each count: a run stopped early keeps what it measured).
function report(acc, counts) {
  const q = (lat, f) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] : NaN);
  const ms = (us) => (us / 1000).toFixed(2);
  const tps = (a) => (a.secs ? a.n / a.secs : 0);
  const fmt = (a) => (a ? `${tps(a).toFixed(0)} (p50 ${ms(q(a.lat, 0.5))} ms${a.errors ? `, ${a.errors} errors` : ''})` : 'skipped');
  const ratio = (a, b) => {
    if (!a || !b || !tps(b)) return '-';
    const per = a.rounds.map((x, i) => x / b.rounds[i]).sort((x, y) => x - y);
    return `${(tps(a) / tps(b)).toFixed(2)} (${per[0].toFixed(2)}-${per[per.length - 1].toFixed(2)})`;
  };
  let md = '| agents | workload | pgbroker (stmt/s) | pg.Pool per process | pg via PgBouncer | pgbroker / pool per process | pgbroker / PgBouncer |\n';
  md += '| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n';
  let cpu = '| agents | workload | pgbroker: agent + broker + PostgreSQL | pool per process: agent + PostgreSQL | PgBouncer: agent + PgBouncer + PostgreSQL |\n';
  cpu += '| ---: | --- | ---: | ---: | ---: |\n';
  const us = (a) => {
    if (!a || !a.n) return '-';
    const per = (x) => (x / a.n).toFixed(0);
    const parts = [per(a.agentUs)];
    if (a.poolerUs) parts.push(per(a.poolerUs));
    parts.push(per(a.pgUs));
    return `${parts.join(' + ')} = ${per(a.agentUs + a.poolerUs + a.pgUs)}`;
  };
  for (const n of counts) {
    for (const w of WORKLOADS) {
      const r = acc[n][w];
      const b = r.pgbroker;
      const p = r['pg.Pool per process'];
      const g = r['pg via PgBouncer'];
      md += `| ${n} | ${w} | ${fmt(b)} | ${fmt(p)} | ${fmt(g)} | ${ratio(b, p)} | ${ratio(b, g)} |\n`;
      cpu += `| ${n} | ${w} | ${us(b)} | ${us(p)} | ${us(g)} |\n`;
    }
  }
  const head = `Node agents, ${ROUNDS} rounds of ${SECONDS} s per workload and variant (the order rotating), ` +
    `pool of ${POOL} backends (broker and PgBouncer), each agent one statement at a time; ` +
    `${os.cpus().length} cores, load average ${os.loadavg()[0].toFixed(1)} at the end ` +
    `(${new Date().toISOString()}). Ratios: of the rounds' totals (lowest-highest of single rounds).\n\n`;
  const out = head + md + '\nCPU time per statement (microseconds):\n\n' + cpu;
  fs.writeFileSync(path.join(__dirname, 'results.md'), out);
  return out;
}

async function main() {
  if (!DSN) throw new Error('PGB_TEST_DSN is not set: make bench-node');
  psql('drop table if exists nb_accounts; create table nb_accounts (aid int primary key, abalance int not null); ' +
    'insert into nb_accounts select g, 0 from generate_series(1, 100000) g; analyze nb_accounts');
  const br = await startBroker(['--pool-size', String(POOL), '--min-pool-size', String(POOL),
    '--max-pool-size', String(POOL)]);
  const bouncer = await startBouncer(Math.max(...AGENTS));
  const direct = `host=${kv('host')} port=${kv('port')} user=${kv('user')} dbname=${kv('dbname')}`;
  const targets = { pgbroker: [br.dir, br.proc.pid], 'pg.Pool per process': [direct, 0] };
  if (bouncer) targets['pg via PgBouncer'] = [bouncer.target, bouncer.pid];
  const variants = VARIANTS.filter((v) => targets[v]);
  // acc[n][workload][variant]: { n, secs, errors, lat[], agentUs, poolerUs, pgUs, rounds: [tps] }
  const acc = {};
  try {
    for (const n of AGENTS) {
      acc[n] = {};
      for (const w of WORKLOADS) {
        acc[n][w] = {};
        for (const v of variants)
          acc[n][w][v] = { n: 0, secs: 0, errors: 0, firstError: '', lat: [], agentUs: 0, poolerUs: 0, pgUs: 0, rounds: [] };
      }
      for (let r = 0; r < ROUNDS; r++) {
        const order = variants.map((_, i) => variants[(i + r) % variants.length]);
        for (const v of order) {
          const [target, poolerPid] = targets[v];
          const agents = await startAgents(v, n, target);
          for (const w of WORKLOADS) {
            const pooler0 = poolerPid ? procCpu(poolerPid, false).us : 0;
            const pg0 = pgCpu();
            const outs = await agents.run(w);
            const a = acc[n][w][v];
            a.poolerUs += poolerPid ? procCpu(poolerPid, false).us - pooler0 : 0;
            a.pgUs += pgCpu() - pg0;
            let done = 0;
            for (const o of outs) {
              done += o.n;
              a.errors += o.errors;
              a.agentUs += o.cpuUs;
              if (!a.firstError && o.firstError) a.firstError = o.firstError;
              for (const x of o.lat) a.lat.push(x);
            }
            a.n += done;
            a.secs += SECONDS;
            a.rounds.push(done / SECONDS);
            process.stderr.write(`${n} agents round ${r + 1} ${w} ${v}: ${(done / SECONDS).toFixed(0)}/s` +
              `${a.firstError ? ' ' + a.firstError : ''}\n`);
          }
          await agents.end();
        }
      }
      for (const w of WORKLOADS) for (const v of variants) acc[n][w][v].lat.sort((x, y) => x - y);
      report(acc, AGENTS.filter((c) => acc[c]));
    }
  } finally {
    if (bouncer) await bouncer.stop();
    await br.stop();
    psql('drop table if exists nb_accounts');
  }
  process.stdout.write(report(acc, AGENTS));
}

main().catch((e) => {
  process.stderr.write(`nodebench: ${e.stack}\n`);
  process.exit(1);
});
