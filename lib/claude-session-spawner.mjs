import cjs from './claude-session-spawner.js'

export const ClaudeSessionSpawner = cjs.ClaudeSessionSpawner
export default cjs.ClaudeSessionSpawner
