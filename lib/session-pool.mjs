import cjs from './session-pool.js'

export const SessionPool = cjs.SessionPool
export default cjs.SessionPool
