// Build the addon with npm's own node-gyp against the running node's
// headers, never downloading any: nodedir is the prefix whose
// include/node/node_api.h exists (/usr for Debian's and nodesource's node).
// In a pgbroker checkout, brings its libpgbroker.a up to date first.
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

const pkg = path.resolve(__dirname, '..');
const root = path.resolve(pkg, '..', '..');

// In a checkout, bring its library up to date (make is incremental).
if (fs.existsSync(path.join(root, 'client', 'pgbroker.h')) && fs.existsSync(path.join(root, 'Makefile'))) {
  const r = spawnSync('make', ['-C', root, '--no-print-directory', 'client/libpgbroker.a'], { stdio: 'inherit' });
  if (r.status !== 0) die('could not build libpgbroker in ' + root);
}
if (!find()) die('libpgbroker not found: build the checkout (make), install it ' +
  '(pkg-config libpgbroker), or set PGBROKER_ROOT');

// `npm install <folder>` links a folder outside the project without
// installing its dependencies: install them in the folder then.
function resolvable(name) {
  try {
    require.resolve(name, { paths: [pkg] });
    return true;
  } catch {
    return false;
  }
}
if (!resolvable('node-addon-api') || !resolvable('pg-types')) {
  const npm = process.env.npm_execpath;
  const cmd = npm ? process.execPath : 'npm';
  const args = [...(npm ? [npm] : []), 'install', '--omit=dev', '--ignore-scripts', '--no-audit',
    '--no-fund', '--no-save'];
  const r = spawnSync(cmd, args, { cwd: pkg, stdio: 'inherit' });
  if (r.status !== 0) die('could not install the dependencies in ' + pkg);
}

const r = spawnSync(process.execPath, [nodeGyp(), 'rebuild', `--nodedir=${nodedir()}`],
  { cwd: pkg, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
