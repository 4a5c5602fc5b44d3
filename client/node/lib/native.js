'use strict';
// The addon, from node-gyp's build directory.
const path = require('path');

const dirs = ['Release', 'Debug'];
let lastError;
for (const d of dirs) {
  try {
    module.exports = require(path.join(__dirname, '..', 'build', d, 'pgbroker.node'));
    lastError = null;
    break;
  } catch (e) {
    lastError = e;
  }
}
if (lastError) {
  lastError.message = 'pgbroker: the native addon is not built (npm run build): ' + lastError.message;
  throw lastError;
}
