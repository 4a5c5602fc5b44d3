'use strict';
// The API of the pool pgbroker replaces, on top of the same Pool: getPool(),
// query with its retry policy, withTransaction, batch, parallel, statistics,
// metrics and the health monitor.
const { Pool, DatabaseError, makeResult } = require('./pool');
const { withRetry, isRetrySafe, sleep } = require('./retry');
const { PoolHealthMonitor } = require('./health');

let pool = null;
let monitor = null;
const stats = { total: 0, failed: 0, retried: 0, totalMs: 0 };

// The process's Pool, made on first use (config applies then only).
async function getPool(config) {
  if (!pool || pool.ending) pool = new Pool(config);
  return pool;
}

async function closePool() {
  const p = pool;
  pool = null;
  disableHealthMonitoring();
  if (p && !p.ending) await p.end();
}

function record(ms, ok) {
  stats.total++;
  stats.totalMs += ms;
  if (!ok) stats.failed++;
  if (monitor) monitor.recordQuery(ms, ok);
}

async function timed(fn) {
  const t0 = performance.now();
  try {
    const r = await fn();
    record(performance.now() - t0, true);
    return r;
  } catch (e) {
    record(performance.now() - t0, false);
    throw e;
  }
}

// pool.query, retried on transient failures that are known not to have
// been applied (5 attempts, 100 ms doubling, +-5 % jitter, 30 s cap).
async function query(text, values, options = {}) {
  const p = await getPool();
  return withRetry(() => timed(() => p.query(text, values)), Object.assign({
    onRetry: () => { stats.retried++; },
  }, options));
}

const RERUN = new Set(['40001', '40P01']);

// BEGIN; fn(client); COMMIT on one session. A throw rolls back and is
// rethrown; a serialization failure or deadlock (40001, 40P01), in fn or
// at COMMIT, rolls back and runs it all again (5 attempts in all).
async function withTransaction(fn, options = {}) {
  const p = await getPool();
  const attempts = options.maxRetries || 5;
  const begin = options.isolationLevel ? `BEGIN ISOLATION LEVEL ${options.isolationLevel}` : 'BEGIN';
  for (let attempt = 1; ; attempt++) {
    const client = await p.connect();
    try {
      await client.query(begin);
      const r = await fn(client, attempt);
      await client.query('COMMIT');
      client.release();
      return r;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch { /* the session ends with release anyway */ }
      client.release();
      if (!RERUN.has(err && err.code) || attempt >= attempts) throw err;
      stats.retried++;
      await sleep(Math.min(100 * 2 ** (attempt - 1), 30000) * (0.95 + 0.1 * Math.random()));
    }
  }
}

function toItem(q) {
  if (typeof q === 'string') return { text: q, values: undefined };
  if (q && typeof q.text === 'string') return q;
  throw new TypeError('a query is a string or { text, values }');
}

// In order, on one backend, as one transaction (pgb_batch): all or nothing.
// Rejects naming the failing statement.
async function batch(queries) {
  const p = await getPool();
  const { prepareValue } = require('./pool');
  const items = queries.map(toItem);
  const raw = await timed(async () => {
    const rs = await p._batch(items.map((q) => [q.text, q.values ? q.values.map((v) => prepareValue(v)) : null]));
    const bad = rs.findIndex((r) => r.error && r.error.code !== 'PB011');
    const at = bad >= 0 ? bad : rs.findIndex((r) => r.error);
    if (at >= 0) {
      const err = new DatabaseError(Object.assign({}, rs[at].error, {
        message: `batch statement ${at + 1} of ${rs.length} failed: ${rs[at].error.message}`,
      }));
      err.index = at;
      err.statement = items[at].text;
      throw err;
    }
    return rs;
  });
  return raw.map((r, i) => makeResult(r, items[i]));
}

// Concurrently, each on a backend of its own, results in order.
async function parallel(queries) {
  const p = await getPool();
  return timed(() => Promise.all(queries.map(toItem).map((q) => p.query(q))));
}

function getQueryStats() {
  return {
    total: stats.total,
    failed: stats.failed,
    successRate: stats.total ? (stats.total - stats.failed) / stats.total : 1,
  };
}

function getMetrics() {
  const h = new PoolHealthMonitor(pool).getHealth();
  return {
    totalCount: h.total,
    idleCount: h.idle,
    waitingCount: h.waiting,
    utilizationPercent: h.utilizationPercent,
    healthy: h.healthy,
    queries: Object.assign(getQueryStats(), {
      retried: stats.retried,
      meanMs: stats.total ? stats.totalMs / stats.total : 0,
    }),
    timestamp: h.timestamp,
  };
}

function getHealthMonitor() {
  if (!monitor) monitor = new PoolHealthMonitor(pool);
  return monitor;
}

function enableHealthMonitoring(intervalMs = 30000) {
  const m = getHealthMonitor();
  m.startMonitoring(intervalMs);
  return m;
}

function disableHealthMonitoring() {
  if (monitor) monitor.stopMonitoring();
}

function resetQueryStats() {
  stats.total = stats.failed = stats.retried = stats.totalMs = 0;
}

module.exports = {
  getPool, closePool, query, withTransaction, batch, parallel, getQueryStats, getMetrics,
  getHealthMonitor, enableHealthMonitoring, disableHealthMonitoring, resetQueryStats, isRetrySafe,
};
