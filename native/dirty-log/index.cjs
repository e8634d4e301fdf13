// The compiled dirty log (build/Release/dirty_log.node), the path of the library QEMU preloads,
// those of the post-copy fault servers and the RAM file's holes (ram_holes.node), all built by `npm ci` from this folder.
const path = require('node:path');
module.exports = require('./build/Release/dirty_log.node');
module.exports.preloadLibrary = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_preload.so');
module.exports.faultServer = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_serve');
module.exports.pipeFaultServer = path.join(__dirname, 'build', 'Release', 'ehoff_uffd_pipe_serve');
module.exports.ramHoles = require('./build/Release/ram_holes.node');
