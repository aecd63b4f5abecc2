import cjs from './index.js'

export const ClaudeSessionSpawner = cjs.ClaudeSessionSpawner
export const SessionPool = cjs.SessionPool
export const SessionRecoveryManager = cjs.SessionRecoveryManager
export default cjs.ClaudeSessionSpawner
