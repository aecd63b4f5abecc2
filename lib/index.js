'use strict'
const { ClaudeSessionSpawner } = require('./spawner')

exports.__esModule = true
exports.ClaudeSessionSpawner = ClaudeSessionSpawner
exports.default = ClaudeSessionSpawner
