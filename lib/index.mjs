import cjs from './index.js'

export const ClaudeSessionSpawner = cjs.ClaudeSessionSpawner
export default cjs.ClaudeSessionSpawner
