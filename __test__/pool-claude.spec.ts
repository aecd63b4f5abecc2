// The pool with real Claude Code sessions: a rate-limited API pauses admission.
import SessionPool from 'claude-session-spawner/session-pool'

import { E2E_MS, claudeConfig, claudeSpawner, scripted } from './claude'
import { nextEvent, within } from './support'

jest.setTimeout(3 * E2E_MS)

const RETRY_AFTER_S = 2

describe('SessionPool and rate limits', () => {
  it('stops admitting while the API answers 429, and resumes when the limit resets', async () => {
    // The first request of the conversation is refused; the CLI retries after the
    // server's retry-after, and everything after that succeeds.
    const model = await scripted([{ status: 429, retryAfter: RETRY_AFTER_S }, { text: 'Done.' }])
    const spawner = claudeSpawner()
    const pool = new SessionPool(spawner, { maxConcurrentSessions: 2, defaultSessionTimeout: 0, maxQueueSize: 10 })
    const events: string[] = []
    for (const name of ['pool-throttled', 'pool-resumed', 'request-queued', 'session-allocated'] as const) {
      pool.on(name, (e?: any) => events.push(e?.requestId ? `${name} ${e.requestId}` : name))
    }
    const throttled = nextEvent<{ until: Date; reason: string }>(pool, 'pool-throttled')
    const first = await pool.requestSession({ requestId: 'first', config: claudeConfig(model), priority: 'high', queuedAt: new Date() })
    const { until, reason } = await within(throttled, 'pool-throttled', E2E_MS)
    expect(until).toBeInstanceOf(Date)
    expect(reason).toMatch(/429/)

    // A slot is free, but the pool waits for the limit to reset.
    const resumed = nextEvent(pool, 'pool-resumed')
    const second = pool.requestSession({ requestId: 'second', config: claudeConfig(model), priority: 'high', queuedAt: new Date() })
    expect(pool.getPoolStatus()).toMatchObject({ activeCount: 1, queuedCount: 1 })
    await within(resumed, 'pool-resumed', E2E_MS)
    expect(Date.now()).toBeGreaterThanOrEqual(until.getTime())
    const started = await within(second, 'the second allocation', E2E_MS)

    const finals = await within(Promise.all([first.completion, started.completion]), 'both sessions', E2E_MS)
    expect(finals.map((s) => s.state)).toEqual(['completed', 'completed'])
    expect(events).toEqual([
      'session-allocated first',
      'pool-throttled',
      'request-queued second',
      'pool-resumed',
      'session-allocated second',
    ])
    await pool.drain()
  })

  it('keeps admitting when respectRateLimits is false', async () => {
    const model = await scripted([{ status: 429, retryAfter: RETRY_AFTER_S }, { text: 'Done.' }])
    const spawner = claudeSpawner()
    const pool = new SessionPool(spawner, {
      maxConcurrentSessions: 2,
      defaultSessionTimeout: 0,
      maxQueueSize: 10,
      respectRateLimits: false,
    })
    const throttled = jest.fn()
    pool.on('pool-throttled', throttled)
    const limited = nextEvent(spawner, 'session-rate-limited')
    const first = await pool.requestSession({ requestId: 'first', config: claudeConfig(model), priority: 'high', queuedAt: new Date() })
    await within(limited, 'session-rate-limited', E2E_MS)
    const second = await pool.requestSession({ requestId: 'second', config: claudeConfig(model), priority: 'high', queuedAt: new Date() })
    // Allocated at once, while the first session still waits out its retry.
    expect(spawner.getSessionStatus(first.sessionId)?.state).toBe('running')
    const finals = await within(Promise.all([first.completion, second.completion]), 'both sessions', E2E_MS)
    expect(finals.map((s) => s.state)).toEqual(['completed', 'completed'])
    expect(throttled).not.toHaveBeenCalled()
    await pool.drain()
  })
})
