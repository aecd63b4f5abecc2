// SessionPool with real agent processes (the fake agent over the text protocol):
// admission order, capacity, callbacks, cancel, auto-recovery, drain, bad input.
import * as fs from 'node:fs'
import { EventEmitter } from 'node:events'

import ClaudeSessionSpawner, {
  SessionPool as RootPool,
  type ClaudeSessionStatus,
  type PooledSessionRequest,
  type SessionPoolConfig,
  type SpawnResult,
} from 'claude-session-spawner'
import SessionPool from 'claude-session-spawner/session-pool'

import { FAKE_AGENT, alive, fakeSpawner, makeConfig, nextEvent, tempDir, until, within } from './support'

type Priority = PooledSessionRequest['priority']

/** A spawner whose agents run the steps each request puts in FAKE_AGENT_STEPS. */
function agents(options = {}): ClaudeSessionSpawner {
  return fakeSpawner(['env-steps'], options)
}

const pools: SessionPool[] = []
afterEach(async () => {
  // Queued requests fail and running sessions end, so nothing outlives a test.
  for (const pool of pools.splice(0)) await within(pool.drain(0), 'pool cleanup')
})

function poolOf(spawner: ClaudeSessionSpawner, config: Partial<SessionPoolConfig> = {}): SessionPool {
  const pool = new SessionPool(spawner, { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 100, ...config })
  pools.push(pool)
  return pool
}

let dir: string
beforeEach(() => {
  dir = tempDir()
})

function request(requestId: string, priority: Priority, steps: string[], extra: Partial<PooledSessionRequest> = {}): PooledSessionRequest {
  const config = makeConfig(dir, { environmentVariables: { FAKE_AGENT_STEPS: steps.join(';') } })
  return { requestId, config, priority, queuedAt: new Date(), ...extra }
}

/** Rejections a test expects are read from this, so none goes unhandled. */
function settled<T>(promise: Promise<T>): Promise<{ value?: T; error?: any }> {
  return promise.then(
    (value) => ({ value }),
    (error) => ({ error }),
  )
}

/** Agents (fake_agent processes) that are this process's children, run, and work in `cwd`. */
function liveAgents(cwd: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        return (
          fields[0] !== 'Z' &&
          Number(fields[1]) === process.pid &&
          fs.readlinkSync(`/proc/${pid}/exe`) === FAKE_AGENT &&
          fs.readlinkSync(`/proc/${pid}/cwd`) === fs.realpathSync(cwd)
        )
      } catch {
        return false
      }
    })
}

/** A session that runs until the test ends its input. */
const HOLD = ['drain-stdin']

describe('SessionPool: the contract surface', () => {
  it('is exported at the root and at the subpath, and is an EventEmitter', () => {
    expect(RootPool).toBe(SessionPool)
    const pool = poolOf(agents())
    expect(pool).toBeInstanceOf(EventEmitter)
    for (const method of ['requestSession', 'getPoolStatus', 'cancelRequest', 'drain', 'getMetrics']) {
      expect(typeof (pool as any)[method]).toBe('function')
    }
  })

  it('spawns at once below capacity; resolves on allocation; callbacks once each, in order', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxConcurrentSessions: 2 })
    const calls: string[] = []
    const allocated = nextEvent<{ requestId: string; sessionId: string }>(pool, 'session-allocated')
    const released = nextEvent<{ sessionId: string; status: ClaudeSessionStatus }>(pool, 'session-released')
    let completed!: (s: ClaudeSessionStatus) => void
    const done = new Promise<ClaudeSessionStatus>((resolve) => (completed = resolve))
    const result = await pool.requestSession(
      request('r1', 'high', ['out:hello', 'exit:0'], {
        onAllocated: (id) => calls.push(`allocated ${id}`),
        onCompleted: (status) => {
          calls.push(`completed ${status.state}`)
          completed(status)
        },
        onFailed: (error) => calls.push(`failed ${error.message}`),
      }),
    )
    expect(result.status.state).toBe('running')
    expect(result.status.pid).toBeGreaterThan(0)
    expect(await allocated).toEqual({ requestId: 'r1', sessionId: result.sessionId })
    const status = await within(done, 'onCompleted')
    expect(status.state).toBe('completed')
    expect(status.stdout).toContain('hello')
    expect((await released).sessionId).toBe(result.sessionId)
    expect(calls).toEqual([`allocated ${result.sessionId}`, 'completed completed'])
    expect(pool.getPoolStatus()).toMatchObject({ capacity: 2, activeCount: 0, queuedCount: 0, utilization: 0 })
  })

  it('reports status: capacity, active sessions, queued requests with estimated waits', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxConcurrentSessions: 2 })
    const a = await pool.requestSession(request('a', 'low', HOLD))
    const b = await pool.requestSession(request('b', 'low', HOLD))
    const queued = [1, 2, 3, 4, 5].map((i) => settled(pool.requestSession(request(`q${i}`, 'medium', ['exit:0']))))
    const status = pool.getPoolStatus()
    expect(status).toMatchObject({ capacity: 2, activeCount: 2, idleCount: 0, queuedCount: 5, utilization: 100 })
    expect(status.activeSessions.map((s) => s.sessionId).sort()).toEqual([a.sessionId, b.sessionId].sort())
    expect(status.activeSessions.every((s) => s.state === 'running')).toBe(true)
    // 60 s per session until one has finished; two run at once.
    expect(status.queuedRequests.map((q) => [q.requestId, q.estimatedWaitTime])).toEqual([
      ['q1', 60_000],
      ['q2', 60_000],
      ['q3', 120_000],
      ['q4', 120_000],
      ['q5', 180_000],
    ])
    expect(status.queuedRequests[0].queuedAt).toBeInstanceOf(Date)
    expect(status.queuedRequests[0].priority).toBe('medium')
    const metrics = pool.getMetrics()
    expect(metrics).toMatchObject({ poolUtilization: 100, queueLength: 5, activeSessions: 2 })
    expect(metrics.queueWaitTime).toBeGreaterThanOrEqual(0)
    spawner.endSession(a.sessionId)
    spawner.endSession(b.sessionId)
    const results = await within(Promise.all(queued), 'queued requests')
    expect(results.every((r) => r.value !== undefined)).toBe(true)
    await until('all sessions ended', () => pool.getPoolStatus().activeCount === 0)
    // Now the mean of the finished sessions stands in for the 60 s.
    const after = pool.getMetrics()
    expect(after.totalSessions).toBe(7)
    expect(after.queueLength).toBe(0)
  })
})

describe('SessionPool: admission', () => {
  it('serves a capacity-1 queue by priority: critical, high, medium, low', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const order: string[] = []
    pool.on('session-allocated', ({ requestId }) => order.push(requestId))
    const queuedEvents: any[] = []
    pool.on('request-queued', (e) => queuedEvents.push(e))
    const blocker = await pool.requestSession(request('blocker', 'low', HOLD))
    const waiting = (['low', 'medium', 'critical', 'high'] as Priority[]).map((p) => pool.requestSession(request(p, p, ['exit:0'])))
    expect(queuedEvents).toEqual([
      { requestId: 'low', position: 1, queueLength: 1 },
      { requestId: 'medium', position: 1, queueLength: 2 },
      { requestId: 'critical', position: 1, queueLength: 3 },
      { requestId: 'high', position: 2, queueLength: 4 },
    ])
    spawner.endSession(blocker.sessionId)
    await within(Promise.all(waiting), 'queued requests')
    await until('the last session ended', () => pool.getPoolStatus().activeCount === 0)
    expect(order).toEqual(['blocker', 'critical', 'high', 'medium', 'low'])
  })

  it('keeps arrival order within equal weights (custom weights included)', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { priorityWeights: { critical: 2, high: 2, medium: 1, low: 1 } })
    const order: string[] = []
    pool.on('session-allocated', ({ requestId }) => order.push(requestId))
    const blocker = await pool.requestSession(request('blocker', 'low', HOLD))
    const arrivals: Array<[string, Priority]> = [
      ['m1', 'medium'],
      ['h1', 'high'],
      ['l1', 'low'],
      ['c1', 'critical'],
      ['m2', 'medium'],
      ['h2', 'high'],
    ]
    const waiting = arrivals.map(([id, p]) => pool.requestSession(request(id, p, ['exit:0'])))
    spawner.endSession(blocker.sessionId)
    await within(Promise.all(waiting), 'queued requests')
    expect(order).toEqual(['blocker', 'h1', 'c1', 'h2', 'm1', 'l1', 'm2'])
  })

  it('resolves a queued request when its session is allocated, not when it ends', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const blocker = await pool.requestSession(request('blocker', 'low', HOLD))
    const queued = pool.requestSession(request('next', 'high', HOLD))
    spawner.endSession(blocker.sessionId)
    const result = await within(queued, 'allocation from the queue')
    expect(spawner.getSessionStatus(result.sessionId)?.state).toBe('running')
    spawner.endSession(result.sessionId)
    expect((await within(result.completion, 'completion')).state).toBe('completed')
  })

  it('rejects with "Session pool queue is full" when the queue holds maxQueueSize', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxQueueSize: 2 })
    await pool.requestSession(request('running', 'low', HOLD))
    const queued = [settled(pool.requestSession(request('q1', 'low', ['exit:0']))), settled(pool.requestSession(request('q2', 'low', ['exit:0'])))]
    const onFailed = jest.fn()
    await expect(pool.requestSession(request('q3', 'critical', ['exit:0'], { onFailed }))).rejects.toThrow('Session pool queue is full')
    expect(onFailed).not.toHaveBeenCalled()
    expect(pool.getPoolStatus().queuedCount).toBe(2)
    void queued
  })

  it('never runs more agents than maxConcurrentSessions: 50 concurrent requests, capacity 3', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxConcurrentSessions: 3 })
    let mostAgents = 0
    let mostActive = 0
    const sample = () => {
      mostAgents = Math.max(mostAgents, liveAgents(dir).length)
      mostActive = Math.max(mostActive, pool.getPoolStatus().activeCount)
    }
    spawner.on('session-spawned', sample)
    const timer = setInterval(sample, 2)
    try {
      const results = await within(
        Promise.all(Array.from({ length: 50 }, (_, i) => pool.requestSession(request(`r${i}`, 'medium', ['sleep:20', 'exit:0'])))),
        '50 allocations',
      )
      expect(new Set(results.map((r) => r.sessionId)).size).toBe(50)
      await within(Promise.all(results.map((r) => r.completion)), '50 completions')
    } finally {
      clearInterval(timer)
    }
    expect(mostAgents).toBeGreaterThan(0)
    expect(mostAgents).toBeLessThanOrEqual(3)
    expect(mostActive).toBe(3)
    expect(spawner.getMetricsSummary().completedSessions).toBe(50)
  })

  it('applies defaultSessionTimeout to requests whose config has none', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { defaultSessionTimeout: 300, autoRecovery: false })
    const completed = new Promise<ClaudeSessionStatus>((resolve) => {
      void pool.requestSession(request('slow', 'low', ['hang'], { onCompleted: resolve }))
    })
    expect((await within(completed, 'timeout')).state).toBe('timeout')
    const own = new Promise<ClaudeSessionStatus>((resolve) => {
      const r = request('own', 'low', ['sleep:600', 'exit:0'], { onCompleted: resolve })
      r.config.timeout = 10_000
      void pool.requestSession(r)
    })
    expect((await within(own, 'own timeout kept')).state).toBe('completed')
  })
})

describe('SessionPool: cancel, failures and callbacks', () => {
  it('cancels a queued request: it never spawns; onFailed, rejection and event', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const spawned: number[] = []
    spawner.on('session-spawned', ({ pid }) => spawned.push(pid))
    const running = await pool.requestSession(request('running', 'low', HOLD))
    const onFailed = jest.fn()
    const onAllocated = jest.fn()
    const cancelled = settled(pool.requestSession(request('doomed', 'critical', ['exit:0'], { onFailed, onAllocated })))
    const event = nextEvent(pool, 'request-cancelled')
    expect(pool.cancelRequest('running')).toBe(false)
    expect(pool.cancelRequest('doomed')).toBe(true)
    expect(pool.cancelRequest('doomed')).toBe(false)
    expect(pool.cancelRequest('nobody')).toBe(false)
    expect(await event).toEqual({ requestId: 'doomed' })
    expect((await cancelled).error.message).toBe('Request cancelled')
    expect(onFailed).toHaveBeenCalledTimes(1)
    expect(onFailed.mock.calls[0][0].message).toBe('Request cancelled')
    expect(onAllocated).not.toHaveBeenCalled()
    // The slot that frees up goes to nobody: the cancelled request is gone for good.
    spawner.endSession(running.sessionId)
    await within(running.completion, 'completion')
    await until('the slot is free', () => pool.getPoolStatus().activeCount === 0)
    expect(spawned).toEqual([running.status.pid])
    // Its id may be used again.
    const again = await pool.requestSession(request('doomed', 'low', ['exit:0']))
    await within(again.completion, 'completion')
  })

  it('rejects and calls onFailed when the spawn fails, and frees the slot', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const blocker = await pool.requestSession(request('blocker', 'low', HOLD))
    const onFailed = jest.fn()
    const bad = request('bad', 'high', ['exit:0'], { onFailed })
    bad.config.workingDirectory = `${dir}/does-not-exist`
    const failing = settled(pool.requestSession(bad))
    const next = pool.requestSession(request('next', 'low', ['exit:0']))
    spawner.endSession(blocker.sessionId)
    const { error } = await within(failing, 'spawn failure')
    expect(error).toBeInstanceOf(Error)
    expect(onFailed).toHaveBeenCalledWith(error)
    await within(next, 'the next request gets the slot')
  })

  it('reports a throwing callback as callback-error and carries on', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const errors: any[] = []
    pool.on('callback-error', (e) => errors.push(e))
    const first = await pool.requestSession(
      request('thrower', 'low', ['exit:0'], {
        onAllocated: () => {
          throw new Error('bad allocated')
        },
        onCompleted: () => {
          throw new Error('bad completed')
        },
      }),
    )
    await within(first.completion, 'completion')
    const second = await within(pool.requestSession(request('after', 'low', ['exit:0'])), 'next request')
    await within(second.completion, 'completion')
    expect(errors.map((e) => [e.requestId, e.callback, e.error.message])).toEqual([
      ['thrower', 'onAllocated', 'bad allocated'],
      ['thrower', 'onCompleted', 'bad completed'],
    ])
  })
})

describe('SessionPool: autoRecovery', () => {
  it('queues a crashed request again up to maxRequestAttempts, then fails it with the last status', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxRequestAttempts: 3 })
    const recovering: any[] = []
    pool.on('session-recovering', (e) => recovering.push(e))
    const sessions: string[] = []
    pool.on('session-allocated', ({ sessionId }) => sessions.push(sessionId))
    const onAllocated = jest.fn()
    const onCompleted = jest.fn()
    let failed!: (e: any) => void
    const failure = new Promise<any>((resolve) => (failed = resolve))
    const result = await pool.requestSession(request('crashy', 'high', ['signal:SEGV'], { onAllocated, onCompleted, onFailed: failed }))
    const error = await within(failure, 'the last attempt')
    expect(sessions).toHaveLength(3)
    expect(sessions[0]).toBe(result.sessionId)
    expect(recovering).toEqual([
      { sessionId: sessions[0], requestId: 'crashy', attempt: 2 },
      { sessionId: sessions[1], requestId: 'crashy', attempt: 3 },
    ])
    expect(error.message).toMatch(/crashed/)
    expect(error.status.state).toBe('crashed')
    expect(error.status.sessionId).toBe(sessions[2])
    expect(onAllocated).toHaveBeenCalledTimes(1)
    expect(onCompleted).not.toHaveBeenCalled()
    expect(spawner.getMetricsSummary().crashedSessions).toBe(3)
  })

  it('retries timeouts too', async () => {
    const spawner = agents()
    const pool = poolOf(spawner, { maxRequestAttempts: 2 })
    const states: string[] = []
    pool.on('session-released', ({ status }) => states.push(status.state))
    const r = request('slow', 'low', ['hang'])
    r.config.timeout = 200
    const failure = new Promise<any>((resolve) => (r.onFailed = resolve))
    await pool.requestSession(r)
    const error = await within(failure, 'the last attempt')
    expect(states).toEqual(['timeout', 'timeout'])
    expect(error.status.state).toBe('timeout')
  })

  it('stops retrying once an attempt completes', async () => {
    const spawner = agents()
    const pool = poolOf(spawner)
    const marker = `${dir}/attempted`
    // The first attempt leaves a marker and crashes; the second finds it and exits 0.
    const r = request('flaky', 'low', [`exit-if-exists:${marker}`, `touch:${marker}`, 'signal:SEGV'])
    const completed = new Promise<ClaudeSessionStatus>((resolve) => (r.onCompleted = resolve))
    const recovering = jest.fn()
    pool.on('session-recovering', recovering)
    await pool.requestSession(r)
    expect((await within(completed, 'the second attempt')).state).toBe('completed')
    expect(recovering).toHaveBeenCalledTimes(1)
  })

  it('does not retry failed sessions, nor anything when autoRecovery is off', async () => {
    const spawner = agents()
    const failedPool = poolOf(spawner)
    const exited = new Promise<ClaudeSessionStatus>((resolve) => {
      void failedPool.requestSession(request('exit1', 'low', ['exit:1'], { onCompleted: resolve }))
    })
    expect((await within(exited, 'failed session')).state).toBe('failed')
    const off = poolOf(agents(), { autoRecovery: false })
    const recovering = jest.fn()
    off.on('session-recovering', recovering)
    const crashed = new Promise<ClaudeSessionStatus>((resolve) => {
      void off.requestSession(request('crash', 'low', ['signal:SEGV'], { onCompleted: resolve }))
    })
    expect((await within(crashed, 'crashed session')).state).toBe('crashed')
    expect(recovering).not.toHaveBeenCalled()
  })
})

describe('SessionPool: drain', () => {
  it('resolves at once with no sessions, emitting pool-draining then pool-drained', async () => {
    const pool = poolOf(agents())
    const events: string[] = []
    pool.on('pool-draining', () => events.push('draining'))
    pool.on('pool-drained', () => events.push('drained'))
    await within(pool.drain(), 'drain')
    expect(events).toEqual(['draining', 'drained'])
    await expect(pool.requestSession(request('late', 'low', ['exit:0']))).rejects.toThrow(/draining/)
  })

  it('fails queued requests, waits for the active ones, and stops a stubborn agent at the deadline', async () => {
    const spawner = agents({ gracePeriodMs: 300 })
    const pool = poolOf(spawner, { maxConcurrentSessions: 2 })
    const events: string[] = []
    pool.on('pool-draining', () => events.push('draining'))
    pool.on('pool-drained', () => events.push('drained'))
    const polite = await pool.requestSession(request('polite', 'low', ['sleep:200', 'exit:0']))
    const stubborn = await pool.requestSession(request('stubborn', 'low', ['ignore-term', 'hang']))
    const onFailed = jest.fn()
    const queued = settled(pool.requestSession(request('queued', 'high', ['exit:0'], { onFailed })))
    const states = new Map<string, string>()
    pool.on('session-released', ({ sessionId, status }) => states.set(sessionId, status.state))
    await within(pool.drain(1_000), 'drain')
    expect(events).toEqual(['draining', 'drained'])
    expect((await queued).error.message).toBe('Pool is draining')
    expect(onFailed.mock.calls[0][0].message).toBe('Pool is draining')
    expect(states.get(polite.sessionId)).toBe('completed')
    expect(states.get(stubborn.sessionId)).toBe('terminated')
    expect(alive(stubborn.status.pid!)).toBe(false)
    expect(pool.getPoolStatus().activeCount).toBe(0)
    const late = settled(pool.requestSession(request('late', 'low', ['exit:0'])))
    expect((await late).error.message).toMatch(/Pool is draining/)
  })
})

describe('SessionPool: bad input', () => {
  it('throws TypeErrors naming the field', async () => {
    const spawner = agents()
    const base = { maxConcurrentSessions: 1, defaultSessionTimeout: 0, maxQueueSize: 10 }
    const ctor = (config: any) => () => new SessionPool(spawner, config)
    for (const [config, field] of [
      [{ ...base, maxConcurrentSessions: 0 }, 'config.maxConcurrentSessions'],
      [{ ...base, maxConcurrentSessions: -1 }, 'config.maxConcurrentSessions'],
      [{ ...base, maxConcurrentSessions: 1.5 }, 'config.maxConcurrentSessions'],
      [{ ...base, maxQueueSize: 'ten' }, 'config.maxQueueSize'],
      [{ ...base, priorityWeights: { critical: 1 } }, 'config.priorityWeights.high'],
      [{ ...base, autoRecovery: 'yes' }, 'config.autoRecovery'],
      [null, 'config'],
    ] as const) {
      expect(ctor(config)).toThrow(TypeError)
      try {
        ctor(config)()
      } catch (e: any) {
        expect(e.field).toBe(field)
        expect(e.message).toContain(field)
      }
    }
    expect(() => new SessionPool({} as any, base)).toThrow(TypeError)

    const pool = poolOf(spawner)
    const wrong = async (r: any, field: string) => {
      const { error } = await settled(pool.requestSession(r))
      expect(error).toBeInstanceOf(TypeError)
      expect(error.field).toBe(field)
      expect(error.message).toContain(field)
    }
    await wrong({ ...request('x', 'low', ['exit:0']), priority: 'urgent' }, 'request.priority')
    await wrong({ ...request('', 'low', ['exit:0']) }, 'request.requestId')
    await wrong({ ...request('x', 'low', ['exit:0']), config: undefined }, 'request.config')
    await wrong({ ...request('x', 'low', ['exit:0']), onFailed: 'no' }, 'request.onFailed')
    await wrong(null, 'request')
    const active = await pool.requestSession(request('dup', 'low', HOLD))
    await wrong(request('dup', 'low', ['exit:0']), 'request.requestId')
    const queued = settled(pool.requestSession(request('dup2', 'low', ['exit:0'])))
    await wrong(request('dup2', 'high', ['exit:0']), 'request.requestId')
    await expect(pool.drain(-1)).rejects.toThrow(TypeError)
    spawner.endSession(active.sessionId)
    expect((await within(queued, 'queued dup2')).value).toBeDefined()
  })
})

export type { SpawnResult }
