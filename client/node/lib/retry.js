'use strict';
// withRetry and CircuitBreaker for any async operation, with the pool's
// policy: 5 attempts, 100 ms doubling, +-5 % jitter, 30 s cap; only
// transient failures are retried, never one whose fate is unknown.
const native = require('./native');

function sleep(ms) {
  return new Promise((res) => setTimeout(res, ms));
}

// pgbroker's own classification (libpgbroker's pgb_sqlstate_*).
function isTransient(err) {
  const code = err && typeof err.code === 'string' ? err.code : '';
  return code.length === 5 && native.sqlstateIsTransient(code);
}

function isRetrySafe(err) {
  const code = err && typeof err.code === 'string' ? err.code : '';
  return code.length === 5 && native.sqlstateRetrySafe(code);
}

function backoff(attempt, o) {
  const base = Math.min(o.initialDelayMs * Math.pow(o.backoffMultiplier, attempt - 1), o.maxDelayMs);
  const j = o.jitterPct / 100;
  return Math.max(0, Math.round(base * (1 - j + 2 * j * Math.random())));
}

const DEFAULTS = {
  maxRetries: 5,          // tries in all, as the original pool counted them
  initialDelayMs: 100,
  maxDelayMs: 30000,
  backoffMultiplier: 2,
  jitterPct: 5,
  shouldRetry: isRetrySafe,
  onRetry: null,
};

async function withRetry(op, options = {}) {
  const o = Object.assign({}, DEFAULTS, options);
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (attempt >= o.maxRetries || !o.shouldRetry(err)) throw err;
      const delay = backoff(attempt, o);
      if (o.onRetry) o.onRetry(err, attempt, delay);
      await sleep(delay);
    }
  }
}

// closed -> open after `threshold` consecutive failures; after resetMs one
// probe is let through (half-open): success closes, failure opens again.
class CircuitBreaker {
  constructor(threshold = 5, resetMs = 30000) {
    this.threshold = threshold;
    this.resetMs = resetMs;
    this.failures = 0;
    this.openedAt = 0;
    this.state = 'closed';
    this.probing = false;
  }

  getState() {
    if (this.state === 'open' && Date.now() - this.openedAt >= this.resetMs) return 'half-open';
    return this.state;
  }

  async execute(op) {
    const st = this.getState();
    if (st === 'open' || (st === 'half-open' && this.probing)) {
      const e = new Error('circuit breaker is open');
      e.code = 'PB002';
      throw e;
    }
    if (st === 'half-open') this.probing = true;
    try {
      const r = await op();
      this.failures = 0;
      this.state = 'closed';
      return r;
    } catch (err) {
      this.failures++;
      if (st === 'half-open' || this.failures >= this.threshold) {
        this.state = 'open';
        this.openedAt = Date.now();
      }
      throw err;
    } finally {
      if (st === 'half-open') this.probing = false;
    }
  }

  reset() {
    this.failures = 0;
    this.state = 'closed';
  }
}

module.exports = { withRetry, CircuitBreaker, isTransient, isRetrySafe, sleep, DEFAULTS };
