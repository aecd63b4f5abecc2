// Types of the ES module `./session-recovery` (session-recovery.mjs): what session-recovery.d.ts declares, with
// the class as the default export.
export * from './session-recovery.js'
export { SessionRecoveryManager as default } from './session-recovery.js'
