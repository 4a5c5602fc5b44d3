'use strict';
// `npm install <checkout>/client/node` in another project builds the addon
// offline: no registry (an unreachable one), no header download (a fresh
// HOME keeps no node-gyp cache), the installed node's own headers.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { startBroker } = require('./helpers');

test('npm install <checkout>/client/node from another directory, offline', { timeout: 300000 }, async () => {
  const pkg = path.resolve(__dirname, '..');
  const proj = fs.mkdtempSync(path.join(process.env.PGB_TEST_TMP || os.tmpdir(), 'npmproj.'));
  const home = path.join(proj, 'home');
  fs.mkdirSync(home);
  fs.writeFileSync(path.join(proj, 'package.json'), '{ "name": "agent", "version": "1.0.0", "private": true }\n');
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  Object.assign(env, { HOME: home, npm_config_registry: 'http://127.0.0.1:9/', npm_config_offline: 'true',
    npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' });
  const addon = path.join(pkg, 'build', 'Release', 'pgbroker.node');
  const before = fs.statSync(addon).mtimeMs;
  const r = spawnSync('npm', ['install', pkg], { cwd: proj, env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.ok(fs.statSync(addon).mtimeMs > before, 'the install script did not build the addon');
  for (const cache of ['.cache/node-gyp', '.node-gyp'])
    assert.ok(!fs.existsSync(path.join(home, cache)), `node-gyp downloaded headers into ~/${cache}`);
  // the project uses it as any dependency
  const br = await startBroker();
  try {
    const q = spawnSync(process.execPath, ['-e', `const { Pool } = require('pgbroker');
      const p = new Pool({ dir: process.argv[1] });
      p.query('select $1::int + 1 n', [41]).then((r) => { console.log(r.rows[0].n); return p.end(); });`, br.dir],
    { cwd: proj, env, encoding: 'utf8', timeout: 20000 });
    assert.equal(q.status, 0, q.stderr);
    assert.equal(q.stdout.trim(), '42');
  } finally {
    await br.stop();
    fs.rmSync(proj, { recursive: true, force: true });
  }
});
