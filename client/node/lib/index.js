'use strict';
// pgbroker for Node.js: `const { Pool } = require('pgbroker')` where code
// had `require('pg')`, plus the original pool's API.
const pgTypes = require('pg-types');
const { Pool, Client, DatabaseError } = require('./pool');
const { withRetry, CircuitBreaker, isTransient, isRetrySafe } = require('./retry');
const { PoolHealthMonitor } = require('./health');
const agent = require('./agent');

module.exports = Object.assign({
  Pool,
  Client,
  DatabaseError,
  types: pgTypes,
  withRetry,
  CircuitBreaker,
  PoolHealthMonitor,
  isTransient,
  isRetrySafe,
}, agent);
module.exports.default = module.exports;
