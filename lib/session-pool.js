'use strict'
// Mirrors the daemon's `./session-pool` module: the class is the default export.
const { SessionPool } = require('./pool')

exports.__esModule = true
exports.SessionPool = SessionPool
exports.default = SessionPool
