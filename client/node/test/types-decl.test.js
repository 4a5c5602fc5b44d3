'use strict';
// The TypeScript declarations compile (tsc --strict) for the README's usage,
// and a pgbroker Pool is what Kysely and drizzle-orm accept as a pg Pool.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const path = require('path');

test('index.d.ts: strict tsc on test/ts/usage.ts', { timeout: 240000 }, () => {
  const tsc = path.join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'ts', 'tsconfig.json')],
    { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
