// The compiled dirty log (build/Release/dirty_log.node), the path of the library QEMU preloads and
// that of the post-copy fault server, all built by `npm ci` from this folder.
const path = require('node:path');
module.exports = require('./build/Release/dirty_log.node');
module.exports.preloadLibrary = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_preload.so');
module.exports.faultServer = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_serve');
