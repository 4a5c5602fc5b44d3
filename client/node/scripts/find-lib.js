// Where libpgbroker is, for binding.gyp: `--cflags` prints include
// directories, `--libs` what to link. The static library of the checkout
// this package sits in (client/node/ -> client/) comes first, then
// $PGBROKER_ROOT, then pkg-config's libpgbroker (--static).
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

function fromTree(root) {
  const lib = path.join(root, 'client', 'libpgbroker.a');
  const hdr = path.join(root, 'client', 'pgbroker.h');
  if (fs.existsSync(lib) && fs.existsSync(hdr))
    return { cflags: [path.join(root, 'client')], libs: [lib, '-lpthread'] };
  return null;
}

function fromPkgConfig() {
  try {
    const run = (args) => execFileSync('pkg-config', args, { encoding: 'utf8' }).trim();
    const inc = run(['--cflags-only-I', 'libpgbroker']).split(/\s+/).filter(Boolean)
      .map((f) => f.replace(/^-I/, ''));
    const libdir = run(['--variable=libdir', 'libpgbroker']);
    const priv = run(['--static', '--libs-only-l', 'libpgbroker']).split(/\s+/)
      .filter((f) => f && f !== '-lpgbroker');
    const a = path.join(libdir, 'libpgbroker.a');
    if (!fs.existsSync(a)) return null;
    return { cflags: inc, libs: [a, ...priv] };
  } catch {
    return null;
  }
}

function find() {
  const here = path.resolve(__dirname, '..', '..', '..');
  return fromTree(here) ||
    (process.env.PGBROKER_ROOT && fromTree(path.resolve(process.env.PGBROKER_ROOT))) ||
    fromPkgConfig();
}

module.exports = { find };

if (require.main === module) {
  const found = find();
  if (!found) {
    process.stderr.write('pgbroker: libpgbroker not found: build the checkout (make) or ' +
      'install it (pkg-config libpgbroker), or set PGBROKER_ROOT\n');
    process.exit(1);
  }
  const what = process.argv[2] === '--cflags' ? found.cflags : found.libs;
  process.stdout.write(what.join('\n') + '\n');
}
