'use strict'
// Mirrors the daemon's `./claude-session-spawner` module: the class is the default export.
const { ClaudeSessionSpawner } = require('./spawner')

exports.__esModule = true
exports.ClaudeSessionSpawner = ClaudeSessionSpawner
exports.default = ClaudeSessionSpawner
