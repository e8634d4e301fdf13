// The compiled scanner (build/Release/page_scan.node), built by `npm ci` from page_scan.c.
module.exports = require('./build/Release/page_scan.node');
