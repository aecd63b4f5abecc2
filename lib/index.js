'use strict'
const { ClaudeSessionSpawner } = require('./spawner')
const { SessionPool } = require('./pool')

exports.__esModule = true
exports.ClaudeSessionSpawner = ClaudeSessionSpawner
exports.SessionPool = SessionPool
exports.default = ClaudeSessionSpawner
