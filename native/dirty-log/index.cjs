// The compiled dirty log (build/Release/dirty_log.node) and the path of the library QEMU preloads,
// both built by `npm ci` from this folder.
const path = require('node:path');
module.exports = require('./build/Release/dirty_log.node');
module.exports.preloadLibrary = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_preload.so');
