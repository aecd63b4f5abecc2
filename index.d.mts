// Types of the package's ES module entry (lib/index.mjs): the same declarations as
// index.d.ts, with the spawner class as the default export.
export * from './index.js'
export { ClaudeSessionSpawner as default } from './index.js'
