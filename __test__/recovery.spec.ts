// SessionRecoveryManager with real agent processes (the fake agent over the text
// protocol): classification from exit statuses and output, dumps on disk, respawns
// from the stored config, backoff, the storm limit, abandon, manual recovery, the
// pool's share of the work, bad input.
import * as fs from 'node:fs'
import * as path from 'node:path'

import ClaudeSessionSpawner, {
  SessionPool,
  type CrashAnalysis,
  type RecoveryConfig,
} from 'claude-session-spawner'
import SessionRecoveryManager from 'claude-session-spawner/session-recovery'

import { fakeSpawner, makeConfig, nextEvent, tempDir, within } from './support'

type Seen = { name: string; at: number; payload: any }

const EVENTS = [
  'crash-detected',
  'crash-dump-saved',
  'crash-dump-failed',
  'crash-analyzed',
  'recovery-attempt',
  'recovery-respawned',
  'recovery-succeeded',
  'recovery-attempt-failed',
  'recovery-failed',
  'recovery-abandoned',
  'recovery-deferred',
  'recovery-throttled',
  'recovery-error',
]

function recorded(manager: SessionRecoveryManager): Seen[] {
  const seen: Seen[] = []
  for (const name of EVENTS) manager.on(name as any, (payload: any) => seen.push({ name, at: Date.now(), payload }))
  return seen
}

const managers: SessionRecoveryManager[] = []
afterEach(() => {
  // No backoff or storm timer outlives a test.
  for (const m of managers.splice(0)) for (const r of m.getActiveRecoveries()) m.abandonRecovery(r.sessionId)
})

let dir: string
let dumps: string
let spawner: ClaudeSessionSpawner
beforeEach(() => {
  dir = tempDir()
  dumps = path.join(dir, 'dumps')
  spawner = fakeSpawner(['env-steps'])
})

function manager(config: Partial<RecoveryConfig> = {}): SessionRecoveryManager {
  const m = new SessionRecoveryManager(spawner, {
    enabled: true,
    maxRetries: 3,
    retryDelay: 10,
    backoffMultiplier: 2,
    saveCrashDumps: true,
    crashDumpDirectory: dumps,
    strategy: 'delayed',
    ...config,
  })
  managers.push(m)
  return m
}

function config(steps: string[], extra = {}) {
  return makeConfig(dir, { environmentVariables: { FAKE_AGENT_STEPS: steps.join(';') }, ...extra })
}

/** Steps that crash the first time (leaving `marker`) and exit 0 once `marker` exists. */
function crashOnce(name: string, crash: string[]): string[] {
  const marker = path.join(dir, `${name}.ran`)
  return [`exit-if-exists:${marker}`, `touch:${marker}`, ...crash]
}

function names(seen: Seen[], sessionId: string): string[] {
  return seen.filter((e) => e.payload.sessionId === sessionId).map((e) => e.name)
}

const mode = (p: string) => fs.statSync(p).mode & 0o777

describe('SessionRecoveryManager', () => {
  it('recovers a segfaulted session: classified, dumped privately, respawned from its config, success when the new session completes', async () => {
    const m = manager()
    const seen = recorded(m)
    const steps = crashOnce('segv', ['out:halfway through', 'err:about to fault', 'signal:SEGV'])
    const { sessionId } = await spawner.spawnSession(config(steps, { environmentVariables: { FAKE_AGENT_STEPS: steps.join(';'), API_TOKEN: 'hunter2' } }))
    const done = await nextEvent<any>(m, 'recovery-succeeded', (e) => e.sessionId === sessionId)

    expect(names(seen, sessionId)).toEqual([
      'crash-detected',
      'crash-dump-saved',
      'crash-analyzed',
      'recovery-attempt',
      'recovery-respawned',
      'recovery-succeeded',
    ])
    const analysis: CrashAnalysis = seen.find((e) => e.name === 'crash-analyzed')!.payload.analysis
    expect(analysis).toMatchObject({ crashType: 'segfault', confidence: 0.95, evidence: 'exit status: signal SIGSEGV', signal: 'SIGSEGV' })
    expect(analysis.suggestedFixes).toHaveLength(2)

    const state = m.getRecoveryStatus(sessionId)!
    expect(state.status).toBe('succeeded')
    expect(state.completedAt).toBeInstanceOf(Date)
    expect(state.crashReport).toMatchObject({ sessionId, signal: 'SIGSEGV' })
    expect(state.attempts).toHaveLength(1)
    expect(state.attempts[0]).toMatchObject({ sessionId, attemptNumber: 1, strategy: 'delayed', success: true, newSessionId: done.newSessionId })
    expect(state.attempts[0].timestamp).toBeInstanceOf(Date)
    // The new session is a real one of the spawner, started from the stored config, and it completed.
    expect(done.newSessionId).not.toBe(sessionId)
    expect(spawner.getSessionStatus(done.newSessionId)!.state).toBe('completed')
    expect(m.getRecoveryStatus(done.newSessionId)!.sessionId).toBe(sessionId)
    expect(m.getRecoveryStats()).toEqual({
      totalCrashes: 1,
      totalRecoveryAttempts: 1,
      successfulRecoveries: 1,
      failedRecoveries: 0,
      abandonedRecoveries: 0,
      recoveryRate: 1,
      avgAttemptsPerRecovery: 1,
    })

    const { filepath } = seen.find((e) => e.name === 'crash-dump-saved')!.payload
    expect(path.dirname(filepath)).toBe(dumps)
    expect(path.basename(filepath)).toMatch(new RegExp(`^crash-${sessionId}-\\d{4}-\\d\\d-\\d\\dT\\d\\d-\\d\\d-\\d\\d\\.\\d{3}Z\\.json$`))
    expect([mode(filepath), mode(dumps)]).toEqual([0o600, 0o700])
    expect(fs.readdirSync(dumps)).toEqual([path.basename(filepath)])
    const dump = JSON.parse(fs.readFileSync(filepath, 'utf8'))
    expect(dump.crashReport.sessionId).toBe(sessionId)
    expect(dump.analysis.crashType).toBe('segfault')
    expect(dump.exitStatus).toMatchObject({ state: 'crashed', signal: 'SIGSEGV' })
    expect(dump.stdoutTail).toContain('halfway through')
    expect(dump.stderrTail).toContain('about to fault')
    expect(dump.config.taskContext.taskId).toBe('T-1')
    expect(dump.config.environmentVariables).toEqual({ API_TOKEN: '[redacted]', FAKE_AGENT_STEPS: '[redacted]' })
    expect(fs.readFileSync(filepath, 'utf8')).not.toContain('hunter2')
  })

  it('reads exit code 137 as SIGKILL, and without an OOM record says it does not know', async () => {
    const m = manager({ saveCrashDumps: false })
    const { sessionId } = await spawner.spawnSession(config(crashOnce('kill', ['exit:137'])))
    const { analysis } = await nextEvent<{ sessionId: string; analysis: CrashAnalysis }>(m, 'crash-analyzed', (e) => e.sessionId === sessionId)
    expect(spawner.getSessionStatus(sessionId)).toMatchObject({ state: 'failed', exitCode: 137 })
    expect(analysis.crashType).toBe('unknown')
    expect(analysis.signal).toBe('SIGKILL')
    expect(analysis.evidence).toMatch(/^exit code 137 = 128 \+ SIGKILL; /)
    expect(analysis.rootCause).toContain('SIGKILL that the spawner did not send')
    expect(analysis.recommendation).toMatch(/^Investigate manually/)
    await nextEvent(m, 'recovery-succeeded', (e: any) => e.sessionId === sessionId)
  })

  it('classifies an agent that aborts after running out of memory as oom', async () => {
    const m = manager({ saveCrashDumps: false, enabled: false })
    const oom = 'err:FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory'
    const { sessionId } = await spawner.spawnSession(config([oom, 'signal:ABRT']))
    const { analysis } = await nextEvent<any>(m, 'crash-analyzed', (e) => e.sessionId === sessionId)
    expect(analysis).toMatchObject({ crashType: 'oom', confidence: 0.9, signal: 'SIGABRT' })
    expect(analysis.evidence).toContain('out of memory')
    // Disabled: the crash is recorded, nothing is respawned.
    expect(m.getRecoveryStatus(sessionId)).toBeNull()
    expect(m.getRecoveryStats().totalCrashes).toBe(1)
  })

  it('recovers a timed-out session with a longer timeout', async () => {
    const m = manager({ saveCrashDumps: false, timeoutGrowth: 2 })
    const seen = recorded(m)
    const { sessionId } = await spawner.spawnSession(config(crashOnce('slow', ['hang']), { timeout: 300 }))
    const done = await nextEvent<any>(m, 'recovery-succeeded', (e) => e.sessionId === sessionId)
    expect(spawner.getSessionStatus(sessionId)!.state).toBe('timeout')
    const analysis = seen.find((e) => e.name === 'crash-analyzed')!.payload.analysis
    expect(analysis).toMatchObject({ crashType: 'timeout', confidence: 1, evidence: "the spawner's timeout ended the session" })
    expect(m.getRecoveryStatus(sessionId)!.attempts[0]).toMatchObject({ newSessionId: done.newSessionId, note: 'timeout 300 ms -> 600 ms' })
  })

  it('counts a new session that crashes again as the next attempt, waits retryDelay × backoff^(n-1), and fails past maxRetries', async () => {
    const m = manager({ saveCrashDumps: false, maxRetries: 3, retryDelay: 80, backoffMultiplier: 2 })
    const seen = recorded(m)
    const { sessionId } = await spawner.spawnSession(config(['signal:SEGV']))
    const failed = await nextEvent<any>(m, 'recovery-failed', (e) => e.sessionId === sessionId)
    expect(failed.reason).toBe('the session did not recover in 3 attempt(s)')

    const mine = seen.filter((e) => e.payload.sessionId === sessionId)
    expect(mine.map((e) => e.name)).toEqual([
      'crash-detected', 'crash-analyzed',
      'recovery-attempt', 'recovery-respawned', 'recovery-attempt-failed',
      'recovery-attempt', 'recovery-respawned', 'recovery-attempt-failed',
      'recovery-attempt', 'recovery-respawned', 'recovery-attempt-failed',
      'recovery-failed',
    ])
    // Each new session's crash is detected under its own id, as part of this recovery.
    const newIds = mine.filter((e) => e.name === 'recovery-respawned').map((e) => e.payload.newSessionId)
    expect(new Set(newIds).size).toBe(3)
    for (const id of newIds) expect(names(seen, id)).toEqual(['crash-detected', 'crash-analyzed'])

    const attempts = mine.filter((e) => e.name === 'recovery-attempt')
    const failures = mine.filter((e) => e.name === 'recovery-attempt-failed')
    expect(attempts.map((e) => e.payload.attemptNumber)).toEqual([1, 2, 3])
    // Timers may fire a millisecond early; the waits are 160 ms then 320 ms.
    expect(attempts[1].at - failures[0].at).toBeGreaterThanOrEqual(160 - 2)
    expect(attempts[2].at - failures[1].at).toBeGreaterThanOrEqual(320 - 2)
    const state = m.getRecoveryStatus(sessionId)!
    expect(state.status).toBe('failed')
    expect(state.attempts.map((a) => [a.attemptNumber, a.success, a.newSessionId])).toEqual(newIds.map((id, i) => [i + 1, false, id]))
    expect(state.attempts[0].error).toMatch(/crashed \(segfault\)/)
    expect(m.getRecoveryStats()).toMatchObject({ totalCrashes: 4, totalRecoveryAttempts: 3, failedRecoveries: 1, recoveryRate: 0, avgAttemptsPerRecovery: 3 })
  })

  it('respawns at once with immediate', async () => {
    const m = manager({ saveCrashDumps: false, strategy: 'immediate', retryDelay: 60_000, maxRetries: 2 })
    const seen = recorded(m)
    const { sessionId } = await spawner.spawnSession(config(['signal:SEGV']))
    await nextEvent(m, 'recovery-failed', (e: any) => e.sessionId === sessionId)
    const mine = seen.filter((e) => e.payload.sessionId === sessionId)
    const attempts = mine.filter((e) => e.name === 'recovery-attempt')
    const failures = mine.filter((e) => e.name === 'recovery-attempt-failed')
    expect(attempts).toHaveLength(2)
    expect(attempts[1].at - failures[0].at).toBeLessThan(60_000)
    expect(m.getRecoveryStatus(sessionId)!.attempts.every((a) => a.strategy === 'immediate')).toBe(true)
  })

  it('abandoning during a backoff wait cancels the pending respawn', async () => {
    const m = manager({ saveCrashDumps: false, retryDelay: 150, backoffMultiplier: 1 })
    const seen = recorded(m)
    // Both crash at once, and again on their first attempt; then each waits 150 ms.
    const a = await spawner.spawnSession(config(['signal:SEGV']))
    await nextEvent(m, 'recovery-attempt-failed', (e: any) => e.sessionId === a.sessionId)
    const b = await spawner.spawnSession(config(['signal:SEGV']))
    m.abandonRecovery(a.sessionId)
    expect(seen.filter((e) => e.name === 'recovery-abandoned').map((e) => e.payload)).toEqual([{ sessionId: a.sessionId }])
    expect(m.getRecoveryStatus(a.sessionId)!.status).toBe('abandoned')
    // B's second attempt comes after A's would have: A's timer is gone.
    await nextEvent(m, 'recovery-attempt', (e: any) => e.sessionId === b.sessionId && e.attemptNumber === 2)
    m.abandonRecovery(b.sessionId)
    expect(seen.filter((e) => e.name === 'recovery-attempt' && e.payload.sessionId === a.sessionId).map((e) => e.payload.attemptNumber)).toEqual([1])
    expect(m.getRecoveryStatus(a.sessionId)!.attempts).toHaveLength(1)
    expect(m.getRecoveryStats()).toMatchObject({ abandonedRecoveries: 2 })
    // Abandoning again changes nothing; an unknown id is an error.
    m.abandonRecovery(a.sessionId)
    expect(() => m.abandonRecovery('claude-session-nope')).toThrow(expect.objectContaining({ code: 'ERR_UNKNOWN_RECOVERY' }))
  })

  it('holds recoveries beyond maxRecoveriesPerMinute, after recording and dumping the crash', async () => {
    const m = manager({ maxRecoveriesPerMinute: 1 })
    const seen = recorded(m)
    const first = await spawner.spawnSession(config(crashOnce('storm1', ['signal:SEGV'])))
    await nextEvent(m, 'recovery-succeeded', (e: any) => e.sessionId === first.sessionId)
    const second = await spawner.spawnSession(config(crashOnce('storm2', ['signal:SEGV'])))
    const held = await nextEvent<any>(m, 'recovery-throttled', (e) => e.sessionId === second.sessionId)
    expect(names(seen, second.sessionId)).toEqual(['crash-detected', 'crash-dump-saved', 'crash-analyzed', 'recovery-throttled'])
    expect(held.attemptNumber).toBe(1)
    expect(held.until).toBeInstanceOf(Date)
    const firstAttempt = m.getRecoveryStatus(first.sessionId)!.attempts[0].timestamp.getTime()
    expect(held.until.getTime()).toBe(firstAttempt + 60_000)
    expect(m.getRecoveryStatus(second.sessionId)).toMatchObject({ status: 'pending', attempts: [] })
    // A manual trigger is the daemon's explicit choice and is not held.
    await expect(m.triggerManualRecovery(second.sessionId)).resolves.toBe(true)
    await nextEvent(m, 'recovery-succeeded', (e: any) => e.sessionId === second.sessionId)
  })

  it('with manual, waits for triggerManualRecovery', async () => {
    const m = manager({ saveCrashDumps: false, strategy: 'manual' })
    const { sessionId } = await spawner.spawnSession(config(crashOnce('manual', ['signal:SEGV'])))
    await nextEvent(m, 'crash-analyzed', (e: any) => e.sessionId === sessionId)
    expect(m.getRecoveryStatus(sessionId)).toMatchObject({ status: 'pending', attempts: [] })
    expect(m.getActiveRecoveries().map((r) => r.sessionId)).toEqual([sessionId])
    const succeeded = nextEvent(m, 'recovery-succeeded', (e: any) => e.sessionId === sessionId)
    await expect(m.triggerManualRecovery(sessionId)).resolves.toBe(true)
    await expect(m.triggerManualRecovery(sessionId)).rejects.toMatchObject({ code: 'ERR_RECOVERY_IN_PROGRESS' })
    await succeeded
    await expect(m.triggerManualRecovery(sessionId)).resolves.toBe(false)
    await expect(m.triggerManualRecovery('claude-session-none')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_RECOVERY' })
  })

  it('never recovers a session the daemon terminated, nor one that completed or failed', async () => {
    const m = manager({ saveCrashDumps: false })
    const seen = recorded(m)
    const hung = await spawner.spawnSession(config(['hang']))
    await spawner.terminateSession(hung.sessionId)
    const ok = await spawner.spawnSession(config(['out:fine']))
    const bad = await spawner.spawnSession(config(['exit:3']))
    await within(Promise.all([ok.completion, bad.completion]), 'endings')
    expect(spawner.getSessionStatus(hung.sessionId)!.state).toBe('terminated')
    expect(seen).toEqual([])
    expect(m.getRecoveryStats().totalCrashes).toBe(0)
  })

  it("recovers 'failed' sessions when recoverOn asks for it", async () => {
    const m = manager({ saveCrashDumps: false, recoverOn: ['failed'] })
    const { sessionId } = await spawner.spawnSession(config(crashOnce('failing', ['exit:3'])))
    const done = await nextEvent<any>(m, 'recovery-succeeded', (e) => e.sessionId === sessionId)
    expect(spawner.getSessionStatus(done.newSessionId)!.state).toBe('completed')
  })

  it('leaves the sessions of a pool with autoRecovery to the pool, and recovers them when the pool does not retry', async () => {
    const m = manager({ saveCrashDumps: false })
    const seen = recorded(m)
    const retrying = new SessionPool(spawner, { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 10 })
    const recovering = nextEvent<any>(retrying, 'session-recovering')
    const done = new Promise((resolve) => {
      void retrying.requestSession({ requestId: 'r1', config: config(crashOnce('pooled', ['signal:SEGV'])), priority: 'high', queuedAt: new Date(), onCompleted: resolve })
    })
    const { sessionId } = await recovering
    await within(done, 'the pool retried the request')
    expect(names(seen, sessionId)).toEqual(['crash-detected', 'crash-analyzed', 'recovery-deferred'])
    expect(seen.find((e) => e.name === 'recovery-deferred')!.payload).toEqual({ sessionId, owner: 'pool' })
    expect(seen.some((e) => e.name === 'recovery-attempt')).toBe(false)

    const plain = new SessionPool(spawner, { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 10, autoRecovery: false })
    const allocated = await plain.requestSession({ requestId: 'r2', config: config(crashOnce('plain', ['signal:SEGV'])), priority: 'high', queuedAt: new Date() })
    await nextEvent(m, 'recovery-succeeded', (e: any) => e.sessionId === allocated.sessionId)
  })

  it('handleCrash called by the daemon for a session already handled does nothing more', async () => {
    const m = manager({ saveCrashDumps: false, enabled: false })
    const { sessionId } = await spawner.spawnSession(config(['signal:SEGV']))
    await nextEvent(m, 'crash-analyzed', (e: any) => e.sessionId === sessionId)
    await m.handleCrash(sessionId, spawner.getCrashReports()[0])
    expect(m.getRecoveryStats().totalCrashes).toBe(1)
  })

  it('refuses bad input with clear errors', async () => {
    const make = (c: object) => () => new SessionRecoveryManager(spawner, c as RecoveryConfig)
    expect(make({ maxRetries: -1 })).toThrow(expect.objectContaining({ name: 'TypeError', field: 'config.maxRetries' }))
    expect(make({ retryDelay: -5 })).toThrow(expect.objectContaining({ field: 'config.retryDelay' }))
    expect(make({ backoffMultiplier: 0 })).toThrow(expect.objectContaining({ field: 'config.backoffMultiplier' }))
    expect(make({ strategy: 'later' })).toThrow(expect.objectContaining({ field: 'config.strategy' }))
    expect(make({ recoverOn: ['terminated'] })).toThrow(/never recovered/)
    expect(() => new SessionRecoveryManager({} as ClaudeSessionSpawner, {} as RecoveryConfig)).toThrow(TypeError)
    const m = manager()
    await expect(m.handleCrash('claude-session-unknown')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_SESSION' })
    await expect(m.handleCrash(42 as unknown as string)).rejects.toBeInstanceOf(TypeError)
    expect(m.getRecoveryStatus('claude-session-unknown')).toBeNull()
    expect(() => m.getRecoveryStatus(7 as unknown as string)).toThrow(TypeError)
  })
})
