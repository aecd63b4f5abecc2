// The TypeScript spawner's defects (original-api.md, last section), each shown fixed.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { alive, fakeSpawner, makeConfig, outputOf, pidsAfter, record, tempDir, until, within } from './support'

describe('defects of the TypeScript spawner', () => {
  it('1. a timed-out session ends timeout, not crashed', async () => {
    const spawner = fakeSpawner(['hang'])
    const ended: string[] = []
    spawner.on('session-ended', ({ status }) => ended.push(status.state))
    const result = await spawner.spawnSession(makeConfig(tempDir(), { timeout: 150 }))
    expect((await within(result.completion, 'end')).state).toBe('timeout')
    expect(ended).toEqual(['timeout'])
    expect(spawner.getCrashReports()).toEqual([])
    expect(spawner.getMetricsSummary().crashedSessions).toBe(0)
  })

  it('1b. an agent that exits 143 on SIGTERM (as Claude Code does) still ends timeout/terminated', async () => {
    // `trap` semantics: the fake agent ignores SIGTERM, so the grace period's SIGKILL ends it;
    // either way the spawner's own reason decides the state.
    const spawner = fakeSpawner(['ignore-term', 'hang'], { gracePeriodMs: 100 })
    const result = await spawner.spawnSession(makeConfig(tempDir(), { timeout: 100 }))
    expect((await within(result.completion, 'end')).state).toBe('timeout')
  })

  it('2. a terminated session ends terminated with exactly one session-ended', async () => {
    const spawner = fakeSpawner(['out:up', 'hang'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await until('output', () => outputOf(events, result.sessionId) !== '')
    await Promise.all([spawner.terminateSession(result.sessionId), spawner.terminateSession(result.sessionId, false)])
    await spawner.terminateSession(result.sessionId)
    const ends = events.filter(([name, p]) => name === 'session-ended' && p.sessionId === result.sessionId)
    expect(ends).toHaveLength(1)
    expect(ends[0][1].status.state).toBe('terminated')
    expect(spawner.getSessionStatus(result.sessionId)!.state).toBe('terminated')
  })

  it('3. every session counts once in the summary', async () => {
    const spawner = fakeSpawner(['exit:0'])
    const dir = tempDir()
    for (let i = 0; i < 3; i++) await within((await spawner.spawnSession(makeConfig(dir))).completion, 'end')
    // Ended sessions are both in the active set (until cleaned up) and in the history.
    expect(spawner.getActiveSessions()).toHaveLength(3)
    expect(spawner.getMetricsSummary().totalSessions).toBe(3)
    expect(spawner.getMetricsSummary().completedSessions).toBe(3)
    spawner.cleanupCompletedSessions()
    expect(spawner.getMetricsSummary().totalSessions).toBe(3)
  })

  it('4. cleanupCompletedSessions removes timeout and terminated sessions too', async () => {
    const spawner = fakeSpawner(['hang'])
    const dir = tempDir()
    const timedOut = await spawner.spawnSession(makeConfig(dir, { timeout: 100 }))
    const terminated = await spawner.spawnSession(makeConfig(dir))
    const running = await spawner.spawnSession(makeConfig(dir))
    await within(timedOut.completion, 'timeout')
    await within(spawner.terminateSession(terminated.sessionId, false), 'terminate')
    expect(spawner.cleanupCompletedSessions()).toBe(2)
    expect(spawner.getActiveSessions().map((s) => s.sessionId)).toEqual([running.sessionId])
  })

  it('5. completion settles after the last output, with all of it captured, with no fixed delay', async () => {
    const spawner = fakeSpawner(['flood-out:2000000', 'flood-err:2000000', 'out:tail'])
    let delivered = 0
    let deliveredAtEnd = -1
    spawner.on('session-output', ({ data }) => (delivered += data.length))
    spawner.on('session-ended', () => (deliveredAtEnd = delivered))
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    const final = await within(result.completion, 'end')
    expect(deliveredAtEnd).toBe(4_000_000 + 'tail\n'.length)
    expect(delivered).toBe(deliveredAtEnd)
    expect(final.stdout.endsWith('xtail\n')).toBe(true)
  })

  it('9. memory per session is bounded while the whole output is on disk', async () => {
    const spawner = fakeSpawner(['flood-out:8000000', 'out:end'], { outputBufferBytes: 64 * 1024 })
    const dir = tempDir()
    const result = await spawner.spawnSession(makeConfig(dir))
    const final = await within(result.completion, 'end')
    expect(final.stdout.length).toBeLessThanOrEqual(64 * 1024)
    expect(final.stdout.endsWith('end\n')).toBe(true)
    const log = path.join(dir, '.vp-daemon', 'sessions', result.sessionId, 'stdout.log')
    expect(fs.statSync(log).size).toBe(8_000_000 + 'end\n'.length)
  })

  it('10. processes the agent started do not outlive it', async () => {
    const spawner = fakeSpawner(['spawn-sleepers:2', 'out:ready', 'hang'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await until('sleepers', () => pidsAfter('sleeper: ', outputOf(events, result.sessionId)).length === 2)
    const sleepers = pidsAfter('sleeper: ', outputOf(events, result.sessionId))
    await within(spawner.terminateSession(result.sessionId), 'terminate')
    await until('the sleepers to be gone', () => sleepers.every((p) => !alive(p)))
  })

  it('EPIPE: an agent that exits before reading its prompt does not crash the host', async () => {
    const spawner = fakeSpawner(['exit:0'])
    const config = makeConfig(tempDir())
    config.taskContext.description = 'x'.repeat(4 * 1024 * 1024)
    const result = await spawner.spawnSession(config)
    expect((await within(result.completion, 'end')).state).toBe('completed')
    expect(() => spawner.sendInput(result.sessionId, 'more')).toThrow(/not running/)
  })

  it('sendInput to an agent that has exited (session not yet finished) throws a clear Error', async () => {
    // The escapee keeps stdout open after the agent exits, so the session stays
    // `running` for a moment after its agent is gone.
    const spawner = fakeSpawner(['spawn-escapee', 'exit:0'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await until('escapee', () => pidsAfter('escapee: ', outputOf(events, result.sessionId)).length === 1)
    const [escapee] = pidsAfter('escapee: ', outputOf(events, result.sessionId))
    try {
      await until('agent exit', () => !alive(result.status.pid!))
      let thrown: any
      try {
        spawner.sendInput(result.sessionId, 'hello?')
      } catch (error) {
        thrown = error
      }
      expect(thrown).toBeInstanceOf(Error)
      expect(['ERR_AGENT_EXITED', 'ERR_SESSION_NOT_RUNNING']).toContain(thrown.code)
      expect(thrown.message).toContain(result.sessionId)
      expect((await within(result.completion, 'end')).state).toBe('completed')
    } finally {
      // Killed by the session's sweep by now, unless the test failed early.
      try {
        process.kill(escapee, 'SIGKILL')
      } catch {}
    }
  })
})
