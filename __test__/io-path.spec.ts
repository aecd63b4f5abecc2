// The session I/O path: input an agent does not read is bounded, spawning leaves
// JavaScript's thread free, and what the sweep killed is in the status.
import SessionPool from 'claude-session-spawner/session-pool'
import { fakeSpawner, makeConfig, outputOf, pidsAfter, record, tempDir, until, within } from './support'

const MiB = 1024 * 1024

describe('input to an agent that does not read it', () => {
  it('is refused past 8 MiB waiting, with a clear error, and the daemon does not grow', async () => {
    const spawner = fakeSpawner(['out:ready', 'hang'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    // Its output comes after its prompt was written (both from the session's one task),
    // so the prompt no longer counts among the bytes waiting.
    await until('the agent to run', () => outputOf(events, result.sessionId).includes('ready'))
    const chunk = 'x'.repeat(MiB)
    let accepted = 0
    let refusal: any
    for (let i = 0; i < 32 && !refusal; i++) {
      try {
        spawner.sendInput(result.sessionId, chunk)
        accepted++
      } catch (error) {
        refusal = error
      }
    }
    // 8 MiB may wait: 8 chunks of a MiB (the text protocol adds nothing to them), one
    // fewer or more at the edges of the count.
    expect(refusal).toBeInstanceOf(Error)
    expect(refusal.code).toBe('ERR_INPUT_BACKLOG')
    expect(refusal.message).toContain(result.sessionId)
    expect(refusal.message).toContain('bytes of earlier input are still waiting')
    expect(accepted).toBeGreaterThanOrEqual(7)
    expect(accepted).toBeLessThanOrEqual(9)

    // Before the bound, 300 more MiB would have been queued in the daemon's memory.
    const before = process.memoryUsage().rss
    let refused = 0
    for (let i = 0; i < 300; i++) {
      try {
        spawner.sendInput(result.sessionId, chunk)
      } catch (error: any) {
        if (error.code === 'ERR_INPUT_BACKLOG') refused++
      }
    }
    const grown = process.memoryUsage().rss - before
    expect(refused).toBe(300)
    expect(grown).toBeLessThan(64 * MiB)

    await spawner.terminateSession(result.sessionId)
    expect((await within(result.completion, 'end')).state).toBe('terminated')
  })
})

/** Runs `work` under a 5 ms interval; resolves with its result and how late the interval fired at worst. */
async function lateness<T>(work: () => Promise<T>): Promise<[T, number]> {
  let worst = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    worst = Math.max(worst, now - last - 5)
    last = now
  }, 5)
  try {
    return [await work(), worst]
  } finally {
    clearInterval(timer)
  }
}

describe('spawning from JavaScript', () => {
  it("keeps the event loop responsive while 200 sessions start (the disk work is on the launcher thread)", async () => {
    const spawner = fakeSpawner(['exit:0'])
    const dir = tempDir()
    const [[results, ended], worst] = await lateness(async () => {
      const results = await Promise.all(Array.from({ length: 200 }, () => spawner.spawnSession(makeConfig(dir))))
      return [results, await within(Promise.all(results.map((r) => r.completion)), 'all 200 to end')] as const
    })
    expect(new Set(results.map((r) => r.sessionId)).size).toBe(200)
    expect(ended.every((s) => s.state === 'completed')).toBe(true)
    // Started on JavaScript's thread, the 200 spawns held it for about 400 ms at once
    // (here, on a fast local disk); started on the launcher thread, 20-60 ms at worst.
    expect(worst).toBeLessThan(150)
  })
})

describe('a pool starting sessions', () => {
  it('keeps the event loop responsive while 200 requests start at once', async () => {
    const spawner = fakeSpawner(['exit:0'])
    const pool = new SessionPool(spawner, { maxConcurrentSessions: 200, defaultSessionTimeout: 0, maxQueueSize: 1000 })
    const dir = tempDir()
    try {
      const [ended, worst] = await lateness(async () => {
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            pool.requestSession({ requestId: `r${i}`, priority: 'medium', config: makeConfig(dir), queuedAt: new Date() }),
          ),
        )
        return within(Promise.all(results.map((r) => r.completion)), 'all 200 to end')
      })
      expect(ended.length).toBe(200)
      expect(ended.every((s) => s.state === 'completed')).toBe(true)
      // Each request's session started on JavaScript's thread as its config arrived
      // held the thread for the 200 spawns at once (about 400 ms here).
      expect(worst).toBeLessThan(150)
    } finally {
      await within(pool.drain(0), 'pool drain')
    }
  })
})

describe('processes that left the group', () => {
  it('are listed in the status when the sweep killed them for the session', async () => {
    const spawner = fakeSpawner(['spawn-escapee', 'exit:0'])
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    const status = await within(result.completion, 'end')
    const [escapee] = pidsAfter('escapee: ', status.stdout)
    expect(escapee).toBeGreaterThan(0)
    expect(status.stoppedEscapees).toEqual([escapee])
  })
})
