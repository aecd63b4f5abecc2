'use strict'
// Mirrors the daemon's `./session-recovery` module: the class is the default export.
const { SessionRecoveryManager } = require('./recovery')

exports.__esModule = true
exports.SessionRecoveryManager = SessionRecoveryManager
exports.default = SessionRecoveryManager
