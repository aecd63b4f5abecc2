import cjs from './index.js'

export const ClaudeSessionSpawner = cjs.ClaudeSessionSpawner
export const SessionPool = cjs.SessionPool
export default cjs.ClaudeSessionSpawner
