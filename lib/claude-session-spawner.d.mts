// Types of the ES module `./claude-session-spawner` (claude-session-spawner.mjs): what claude-session-spawner.d.ts declares, with
// the class as the default export.
export * from './claude-session-spawner.js'
export { ClaudeSessionSpawner as default } from './claude-session-spawner.js'
