'use strict'
const { ClaudeSessionSpawner } = require('./spawner')
const { SessionPool } = require('./pool')
const { SessionRecoveryManager } = require('./recovery')

exports.__esModule = true
exports.ClaudeSessionSpawner = ClaudeSessionSpawner
exports.SessionPool = SessionPool
exports.SessionRecoveryManager = SessionRecoveryManager
exports.default = ClaudeSessionSpawner
