import cjs from './session-recovery.js'

export const SessionRecoveryManager = cjs.SessionRecoveryManager
export default cjs.SessionRecoveryManager
