// Build the addon with npm's own node-gyp against the running node's
// headers, never downloading any: nodedir is the prefix whose
// include/node/node_api.h exists (/usr for Debian's and nodesource's node).
// In a pgbroker checkout whose library is not built yet, builds it first.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { find } = require('./find-lib');

function die(msg) {
  process.stderr.write(`pgbroker: ${msg}\n`);
  process.exit(1);
}

function nodedir() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(process.execPath, '..', '..'), '/usr', '/usr/local'];
  for (const dir of candidates)
    if (dir && fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  die('no Node.js headers (include/node/node_api.h) next to ' + process.execPath +
      ' nor in /usr or /usr/local: install them (Debian: libnode-dev)');
}

function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  try {
    const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout.trim();
    candidates.push(path.join(npmRoot, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  } catch { /* no npm on PATH */ }
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm',
    'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push('/usr/share/nodejs/node-gyp/bin/node-gyp.js');
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  die('node-gyp not found (it comes with npm)');
}

const root = path.resolve(__dirname, '..', '..', '..');
if (!find() && fs.existsSync(path.join(root, 'client', 'pgbroker.h'))) {
  const r = spawnSync('make', ['-C', root, 'client/libpgbroker.a'], { stdio: 'inherit' });
  if (r.status !== 0) die('could not build libpgbroker in ' + root);
}
if (!find()) die('libpgbroker not found: build the checkout (make), install it ' +
  '(pkg-config libpgbroker), or set PGBROKER_ROOT');
const r = spawnSync(process.execPath, [nodeGyp(), 'rebuild', `--nodedir=${nodedir()}`],
  { cwd: path.resolve(__dirname, '..'), stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
