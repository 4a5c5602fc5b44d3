'use strict';
// PoolHealthMonitor: the broker's pool health (pgb_pool_health, read from its
// stats segment without a round trip), sampled on an interval, with the
// last 100 samples and their trend, and the queries this process recorded.
const native = require('./native');

const HISTORY = 100;

class PoolHealthMonitor {
  constructor(pool, options = {}) {
    this.pool = pool;
    this.dir = (pool && pool.options && pool.options.dir) || null;
    this.history = [];
    this.timer = null;
    this.queries = { total: 0, failed: 0, totalMs: 0, slow: 0 };
    this.slowQueryMs = options.slowQueryMs || 1000;
  }

  // { total, idle, waiting, healthy, utilizationPercent, timestamp }
  getHealth() {
    const h = native.health(this.dir);
    return {
      total: h.total,
      idle: h.idle,
      active: h.active,
      waiting: h.waiting,
      healthy: h.ok && h.healthy,
      utilizationPercent: h.utilizationPercent,
      timestamp: h.timestampMs > 0 ? new Date(h.timestampMs) : new Date(),
    };
  }

  // The broker's verdict with its reasons and what to do about them.
  checkHealth() {
    const h = native.health(this.dir);
    const lines = (s) => s.split('\n').filter(Boolean);
    const status = !h.ok ? 'unhealthy' : h.status === 'healthy' ? 'healthy'
      : h.status === 'degraded' ? 'degraded' : 'unhealthy';
    const reasons = h.ok ? lines(h.reasons) : [h.error || 'no broker'];
    const recommendations = h.ok ? lines(h.recommendations)
      : ['start pgbroker, or point PGBROKER_DIR at its run directory'];
    const q = this.queries;
    return {
      status,
      reasons,
      recommendations,
      metrics: this.getHealth(),
      queries: {
        total: q.total,
        failed: q.failed,
        successRate: q.total ? (q.total - q.failed) / q.total : 1,
        meanMs: q.total ? q.totalMs / q.total : 0,
        slow: q.slow,
      },
      trend: this.getTrend(),
    };
  }

  recordQuery(durationMs, ok = true) {
    this.queries.total++;
    if (!ok) this.queries.failed++;
    this.queries.totalMs += durationMs;
    if (durationMs >= this.slowQueryMs) this.queries.slow++;
  }

  sample() {
    const s = this.getHealth();
    this.history.push(s);
    if (this.history.length > HISTORY) this.history.shift();
    return s;
  }

  getHistory() {
    return this.history.slice();
  }

  // 'improving' | 'stable' | 'degrading' from the utilization of the older
  // and the newer half of the history (needs 4 samples; 'stable' before).
  getTrend() {
    const h = this.history;
    if (h.length < 4) return 'stable';
    const half = Math.floor(h.length / 2);
    const mean = (a) => a.reduce((s, x) => s + x.utilizationPercent + 10 * x.waiting, 0) / a.length;
    const older = mean(h.slice(0, half));
    const newer = mean(h.slice(half));
    if (newer > older + 10) return 'degrading';
    if (newer < older - 10) return 'improving';
    return 'stable';
  }

  // Samples every intervalMs without keeping the process alive.
  startMonitoring(intervalMs = 30000) {
    this.stopMonitoring();
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  stopMonitoring() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  isMonitoring() {
    return this.timer !== null;
  }
}

module.exports = { PoolHealthMonitor, HISTORY };
