// Types of the ES module `./session-pool` (session-pool.mjs): what session-pool.d.ts declares, with
// the class as the default export.
export * from './session-pool.js'
export { SessionPool as default } from './session-pool.js'
