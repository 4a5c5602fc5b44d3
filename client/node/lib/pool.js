'use strict';
// A pg-compatible Pool over libpgbroker. pool.query sends each statement
// with PGB_INDEPENDENT on the process's one broker connection, so that
// concurrent queries spread over backends as pg.Pool's would; pool.connect()
// gives a Client with a broker connection of its own, whose statements run
// in order on one session (pinned while a transaction is open). release()
// makes that connection a clean, unpinned session again (pgb_reset) and
// keeps it for the next connect(); release(err) closes it.
const EventEmitter = require('events');
const pgTypes = require('pg-types');
const native = require('./native');

const DEFAULT_MAX_IN_FLIGHT = 128;

class DatabaseError extends Error {
  constructor(fields) {
    super(fields.message);
    this.name = 'error';
    this.length = 0;
    for (const k of Object.keys(fields)) if (k !== 'message') this[k] = fields[k];
  }
}

function brokerError(code, message) {
  return new DatabaseError({ message, code, severity: 'ERROR' });
}

// --- parameters: as pg's utils.prepareValue ---

function pad(n, digits) {
  return String(n).padStart(digits, '0');
}

function dateToString(d) {
  let offset = -d.getTimezoneOffset();
  let year = d.getFullYear();
  const bc = year < 1;
  if (bc) year = Math.abs(year) + 1;
  let s = `${pad(year, 4)}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)}T` +
    `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.` +
    pad(d.getMilliseconds(), 3);
  if (offset < 0) {
    s += '-';
    offset *= -1;
  } else {
    s += '+';
  }
  s += `${pad(Math.floor(offset / 60), 2)}:${pad(offset % 60, 2)}`;
  return bc ? s + ' BC' : s;
}

function escapeElement(s) {
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

function arrayString(a) {
  const parts = a.map((v) => {
    if (v === null || v === undefined) return 'NULL';
    if (Array.isArray(v)) return arrayString(v);
    if (Buffer.isBuffer(v) || ArrayBuffer.isView(v))
      return '"\\\\x' + Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') + '"';
    return escapeElement(prepareValue(v));
  });
  return '{' + parts.join(',') + '}';
}

function prepareValue(v, seen) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v) || ArrayBuffer.isView(v))
    return '\\x' + Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  if (v instanceof Date) return dateToString(v);
  if (Array.isArray(v)) return arrayString(v);
  if (typeof v === 'object') {
    if (typeof v.toPostgres === 'function') {
      seen = seen || [];
      if (seen.includes(v)) throw new Error('circular reference detected while preparing "' + v + '" for query');
      seen.push(v);
      return prepareValue(v.toPostgres(prepareValue), seen);
    }
    return JSON.stringify(v);
  }
  return String(v);
}

// --- results: as pg's Result ---

const TAG = /^([A-Za-z]+)(?: (\d+))?(?: (\d+))?/;

function makeResult(raw, config) {
  const m = TAG.exec(raw.command || '');
  const names = raw.names || [];
  const oids = raw.oids || [];
  const types = config.types || pgTypes;
  const parsers = oids.map((oid) => types.getTypeParser(oid, 'text'));
  const fields = names.map((name, i) => ({
    name,
    tableID: 0,
    columnID: 0,
    dataTypeID: oids[i],
    dataTypeSize: -1,
    dataTypeModifier: raw.mods[i],
    format: 'text',
  }));
  const asArray = config.rowMode === 'array';
  const rows = (raw.rows || []).map((r) => {
    if (asArray) {
      for (let i = 0; i < r.length; i++) if (r[i] !== null) r[i] = parsers[i](r[i]);
      return r;
    }
    const o = {};
    for (let i = 0; i < r.length; i++) o[names[i]] = r[i] === null ? null : parsers[i](r[i]);
    return o;
  });
  let rowCount = null;
  if (m) {
    const n = m[3] || m[2];
    if (n) rowCount = parseInt(n, 10);
  }
  return {
    command: m ? m[1] : null,
    rowCount,
    oid: m && m[3] ? parseInt(m[2], 10) : null,
    rows,
    fields,
    rowAsArray: asArray,
  };
}

// query(text, values, cb) / query(config, values, cb) / query(config, cb)
// types: the Pool's own (pg's Pool/Client option), unless the query has some.
function normalize(textOrConfig, values, cb, types) {
  if (typeof values === 'function') {
    cb = values;
    values = undefined;
  }
  let config;
  if (textOrConfig && typeof textOrConfig.submit === 'function')
    throw new TypeError('pgbroker: a Submittable (pg-cursor, pg-query-stream) is not supported: results are not streamed');
  if (typeof textOrConfig === 'string') {
    config = { text: textOrConfig, values };
  } else if (textOrConfig && typeof textOrConfig === 'object' && typeof textOrConfig.text === 'string') {
    config = Object.assign({}, textOrConfig);
    if (values !== undefined) config.values = values;
    if (!cb && typeof textOrConfig.callback === 'function') cb = textOrConfig.callback;
  } else {
    throw new TypeError('Client was passed a null or undefined query');
  }
  if (types && !config.types) config.types = types;
  return { config, cb };
}

function withCallback(promise, cb) {
  if (!cb) return promise;
  promise.then((r) => cb(null, r), (e) => cb(e));
  return undefined;
}

// One broker connection and what is in flight on it.
class Channel {
  constructor(dir, flags, maxInFlight, onLost) {
    this.flags = flags;
    this.maxInFlight = maxInFlight;
    this.onLost = onLost;
    this.pending = new Map(); // id -> { resolve, reject, config }
    this.queue = [];          // sends waiting for room
    this.conn = new native.Conn(dir, (ready) => this.deliver(ready));
    this.dir = dir;
    if (!this.conn.ok()) {
      const msg = this.conn.errorMessage();
      this.conn.close();
      this.conn = null;
      throw brokerError('PB007', 'could not connect to pgbroker: ' + msg);
    }
  }

  ok() {
    return this.conn !== null && this.conn.ok();
  }

  busy() {
    return this.pending.size + this.queue.length;
  }

  run(config) {
    return new Promise((resolve, reject) => {
      let params = null;
      try {
        if (config.values) params = config.values.map((v) => prepareValue(v));
      } catch (e) {
        reject(e);
        return;
      }
      const job = { text: config.text, params, config, resolve, reject };
      if (this.pending.size >= this.maxInFlight) this.queue.push(job);
      else this.start(job);
    });
  }

  start(job) {
    if (!this.conn) {
      job.reject(brokerError('PB007', 'the connection is closed'));
      return;
    }
    let id;
    try {
      id = this.conn.send(job.text, job.params, this.flags);
    } catch (e) {
      job.reject(e);
      return;
    }
    if (id < 0) {
      const gone = !this.conn.ok();
      job.reject(brokerError(gone ? 'PB003' : 'PB006', this.conn.errorMessage()));
      if (gone) this.lost();
      return;
    }
    // The addon watches pgb_socket() from here on.
    this.pending.set(id, job);
  }

  deliver(ready) {
    for (let i = 0; i < ready.length; i += 2) {
      const job = this.pending.get(ready[i]);
      const raw = ready[i + 1];
      if (!job) continue;
      this.pending.delete(ready[i]);
      if (raw.error) {
        job.reject(new DatabaseError(raw.error));
        if (raw.error.code === 'PB003') this.lost();
        continue;
      }
      try {
        job.resolve(makeResult(raw, job.config));
      } catch (e) {
        job.reject(e);
      }
    }
    while (this.queue.length && this.pending.size < this.maxInFlight && this.conn)
      this.start(this.queue.shift());
  }

  lost() {
    if (this.lostReported) return;
    this.lostReported = true;
    const err = brokerError('PB003', 'broker gone: the pgbroker process exited');
    for (const job of this.queue) job.reject(err);
    this.queue = [];
    if (this.onLost) this.onLost(err, this);
  }

  stats() {
    return this.conn ? this.conn.stats() : null;
  }

  batch(items) {
    return this.conn.batch(items);
  }

  close() {
    if (this.conn) this.conn.close();
    this.conn = null;
    const err = brokerError('PB007', 'the connection is closed');
    for (const job of this.pending.values()) job.reject(err);
    for (const job of this.queue) job.reject(err);
    this.pending.clear();
    this.queue = [];
  }

  // Resolves when nothing is in flight any more.
  idle() {
    if (this.busy() === 0) return Promise.resolve();
    const all = [...this.pending.values(), ...this.queue].map((j) => new Promise((res) => {
      const { resolve, reject } = j;
      j.resolve = (v) => { resolve(v); res(); };
      j.reject = (e) => { reject(e); res(); };
    }));
    return Promise.all(all).then(() => this.idle());
  }
}

// A client of pool.connect(): its statements run in order on one session.
class Client extends EventEmitter {
  constructor(pool, channel) {
    super();
    this._pool = pool;
    this._channel = channel;
    this._released = false;
    channel.owner = this;
  }

  query(textOrConfig, values, cb) {
    const n = normalize(textOrConfig, values, cb, this._pool.options.types);
    const p = this._released
      ? Promise.reject(new Error('Client was closed and is not queryable'))
      : this._channel.run(n.config);
    return withCallback(p, n.cb);
  }

  // Ends the session: once what is in flight is done, the broker rolls back
  // what is open, discards the session state and unpins its backend; the
  // connection then serves a later connect(). With an error (or true), as
  // pg, the connection is closed instead.
  release(err) {
    if (this._released) throw new Error('Release called on client which has already been released to the pool.');
    this._released = true;
    const ch = this._channel;
    ch.owner = null;
    this._pool._clients.delete(this);
    this._pool._recycle(ch, !!err);
    this._pool.emit('release', err, this);
  }
}

function envInt(name, dflt) {
  const v = process.env[name];
  const n = v === undefined || v === '' ? NaN : Number(v);
  return Number.isInteger(n) ? n : dflt;
}

class Pool extends EventEmitter {
  constructor(config = {}) {
    super();
    this.options = Object.assign({
      dir: config.dir || config.runDir || process.env.PGBROKER_DIR || null,
      max: envInt('POSTGRES_POOL_SIZE', 25),
      maxInFlight: DEFAULT_MAX_IN_FLIGHT,
    }, config);
    this.ending = false;
    this.ended = false;
    this._channel = null;
    this._clients = new Set();
    this._idle = [];          // clean client connections for connect()
    this._resetting = 0;      // released ones being made clean
    this._connectWaiters = []; // connect()s waiting for one of those
    this._workers = [];       // idle connections for batches
    this._batches = 0;
    this._healthCache = null;
    this._stats = { total: 0, failed: 0 };
  }

  _shared() {
    if (this._channel && this._channel.ok()) return this._channel;
    if (this._channel && this._channel.busy() === 0) this._channel.close();
    this._channel = new Channel(this.options.dir, native.INDEPENDENT, this.options.maxInFlight,
      (err) => this._lost(err));
    return this._channel;
  }

  _lost(err) {
    // The idle client connections went with the broker.
    for (const ch of this._idle) ch.close();
    this._idle = [];
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  _count(p) {
    return p.then((r) => { this._stats.total++; return r; },
      (e) => { this._stats.total++; this._stats.failed++; throw e; });
  }

  query(textOrConfig, values, cb) {
    let n;
    try {
      n = normalize(textOrConfig, values, cb, this.options.types);
    } catch (e) {
      if (typeof values === 'function') return values(e);
      if (typeof cb === 'function') return cb(e);
      return Promise.reject(e);
    }
    let p;
    if (this.ending) {
      p = Promise.reject(new Error('Cannot use a pool after calling end on the pool'));
    } else {
      try {
        p = this._count(this._shared().run(n.config));
      } catch (e) {
        p = this._count(Promise.reject(e));
      }
    }
    return withCallback(p, n.cb);
  }

  connect(cb) {
    const p = this.ending
      ? Promise.reject(new Error('Cannot use a pool after calling end on the pool'))
      : this._acquire();
    if (!cb) return p;
    p.then((c) => cb(null, c, (err) => c.release(err)), (e) => cb(e));
    return undefined;
  }

  // A clean connection: an idle one, else one being made clean (a round
  // trip to the broker, cheaper than a new connection), else a new one.
  async _acquire() {
    let ch = null;
    while (!ch && this._idle.length) {
      ch = this._idle.pop();
      if (!ch.ok()) {
        ch.close();
        ch = null;
      }
    }
    if (!ch && this._resetting > this._connectWaiters.length)
      ch = await new Promise((res) => this._connectWaiters.push(res));
    if (this.ending) {
      if (ch) ch.close();
      throw new Error('Cannot use a pool after calling end on the pool');
    }
    let fresh = false;
    if (!ch) {
      ch = new Channel(this.options.dir, 0, this.options.maxInFlight, (err, lost) => {
        const c = lost.owner;
        if (c && c.listenerCount('error') > 0) c.emit('error', err);
        this._lost(err);
      });
      fresh = true;
    }
    const client = new Client(this, ch);
    this._clients.add(client);
    if (fresh) this.emit('connect', client);
    this.emit('acquire', client);
    return client;
  }

  // A released client's connection: reset and kept, or closed.
  async _recycle(ch, discard) {
    this._resetting++;
    let keep = false;
    try {
      await ch.idle();
      if (!discard && !this.ending && ch.ok() && !ch.lostReported)
        keep = (await ch.conn.reset()) === '';
    } catch {
      keep = false;
    } finally {
      this._resetting--;
    }
    if (keep && !this.ending) {
      const w = this._connectWaiters.shift();
      if (w) w(ch);
      else if (this._idle.length < this.options.max) this._idle.push(ch);
      else ch.close();
    } else {
      ch.close();
    }
    // connect()s that waited for more resets than there are now
    while (this._connectWaiters.length > this._resetting) this._connectWaiters.shift()(null);
    this._maybeEnded();
  }

  _maybeEnded() {
    if (this.ending && this._clients.size === 0 && this._batches === 0 && this._resetting === 0 &&
        this._endResolve) this._endResolve();
  }

  // pgb_batch on a connection of its own, off the event loop.
  async _batch(items) {
    if (this.ending) throw new Error('Cannot use a pool after calling end on the pool');
    let ch = this._workers.pop();
    if (!ch || !ch.ok()) ch = new Channel(this.options.dir, 0, 1, null);
    this._batches++;
    try {
      return await ch.batch(items);
    } finally {
      this._batches--;
      if (ch.ok() && !this.ending) this._workers.push(ch);
      else ch.close();
      this._maybeEnded();
    }
  }

  _health() {
    const now = Date.now();
    if (!this._healthCache || now - this._healthCache.at > 50)
      this._healthCache = { at: now, h: native.health(this.options.dir) };
    return this._healthCache.h;
  }

  get totalCount() {
    return this._health().total;
  }

  get idleCount() {
    return this._health().idle;
  }

  get waitingCount() {
    return this._health().waiting;
  }

  get expiredCount() {
    return 0;
  }

  // Waits for what is in flight, then closes every connection.
  end(cb) {
    if (this.ending) {
      const e = new Error('Called end on pool more than once');
      return cb ? cb(e) : Promise.reject(e);
    }
    this.ending = true;
    const done = (async () => {
      if (this._channel) await this._channel.idle();
      if (this._clients.size > 0 || this._batches > 0 || this._resetting > 0)
        await new Promise((res) => { this._endResolve = res; });
      if (this._channel) this._channel.close();
      for (const w of this._workers) w.close();
      this._workers = [];
      for (const ch of this._idle) ch.close();
      this._idle = [];
      this._channel = null;
      this.ended = true;
      this.emit('end');
    })();
    return withCallback(done, cb);
  }
}

module.exports = { Pool, Client, DatabaseError, prepareValue, makeResult, brokerError };
