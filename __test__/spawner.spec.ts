// Every method and event of the contract's spawner, against real processes (the
// fake agent over the text protocol).
import * as fs from 'node:fs'
import * as path from 'node:path'

import ClaudeSessionSpawner from 'claude-session-spawner'

import {
  FAKE_AGENT,
  alive,
  fakeSpawner,
  groupMembers,
  makeConfig,
  nextEvent,
  outputOf,
  pidsAfter,
  record,
  tempDir,
  until,
  within,
} from './support'

describe('spawnSession', () => {
  it('starts the agent, resolves once it runs, emits session-spawned first', async () => {
    const spawner = fakeSpawner(['out:hello', 'err:careful'])
    const events = record(spawner)
    const dir = tempDir()
    const result = await spawner.spawnSession(makeConfig(dir))

    expect(result.sessionId).toMatch(/^claude-session-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(result.status.state).toBe('running')
    expect(result.status.pid).toBeGreaterThan(0)
    expect(result.status.startTime).toBeInstanceOf(Date)
    expect(events[0]).toEqual(['session-spawned', { sessionId: result.sessionId, pid: result.status.pid }])

    const final = await within(result.completion, 'completion')
    expect(final.state).toBe('completed')
    expect(final.exitCode).toBe(0)
    expect(final.stdout).toBe('hello\n')
    expect(final.stderr).toBe('careful\n')
    expect(final.endTime).toBeInstanceOf(Date)
    expect(final.executionTime).toBeGreaterThanOrEqual(0)
    expect(final.metrics).toEqual({ commandsExecuted: 0, filesModified: 0, approvalPrompts: 0, escalations: 0, errors: 0 })
  })

  it('writes CLAUDE.md with the contract sections in order, and complete logs', async () => {
    const spawner = fakeSpawner(['env:CLAUDE_CONFIG_PATH', 'err:e'])
    const dir = tempDir()
    const base = path.join(dir, 'BASE.md')
    fs.writeFileSync(base, 'House rules: be kind.\n')
    const result = await spawner.spawnSession(makeConfig(dir, { claudeConfigPath: base }))
    const final = await within(result.completion, 'completion')

    const sessionDir = path.join(dir, '.vp-daemon', 'sessions', result.sessionId)
    expect(spawner.getSessionDirectory(result.sessionId)).toBe(sessionDir)
    const md = fs.readFileSync(path.join(sessionDir, 'CLAUDE.md'), 'utf8')
    const order = [
      `# Claude Session ${result.sessionId}`,
      '**Task:** Run the fake task',
      '**Priority:** medium',
      '## VP Identity',
      '- **Name:** Test VP',
      '- **Email:** vp@example.com',
      '- **Role:** Engineer',
      '## Objectives',
      '- Finish the task',
      '- Keep the build green',
      '## Constraints',
      '### Forbidden Commands',
      'rm -rf',
      '### Required Approvals',
      '- deploy',
      '## Resource Limits',
      '- **Max Tokens:** 10000',
      '- **Max Execution Time:** 60000ms',
      '- **Allowed Tools:** read, bash',
      '## Memory Context',
      '### Recent Actions',
      '- [2024-05-01T10:00:00.000Z] ran tests: ok',
      '### Preferences',
      '- style: "terse"',
      '---',
      'House rules: be kind.',
    ]
    let at = 0
    for (const needle of order) {
      const found = md.indexOf(needle, at)
      expect({ needle, found: found >= 0 }).toEqual({ needle, found: true })
      at = found + needle.length
    }
    expect(final.stdout).toBe(`CLAUDE_CONFIG_PATH=${path.join(sessionDir, 'CLAUDE.md')}\n`)
    expect(fs.readFileSync(path.join(sessionDir, 'stdout.log'), 'utf8')).toBe(final.stdout)
    expect(fs.readFileSync(path.join(sessionDir, 'stderr.log'), 'utf8')).toBe('e\n')
  })

  it('takes a relative claudePath from the current directory, not the session directory', async () => {
    const relative = path.relative(process.cwd(), FAKE_AGENT)
    expect(relative.startsWith('target')).toBe(true)
    const spawner = new ClaudeSessionSpawner({ claudePath: `./${relative}`, protocol: 'text', extraArgs: ['out:found'] })
    expect(spawner.claudePath).toBe(FAKE_AGENT)
    const final = await within((await spawner.spawnSession(makeConfig(tempDir()))).completion, 'completion')
    expect(final.stdout).toBe('found\n')
  })

  it('sends the task prompt on stdin and layers environment variables', async () => {
    const spawner = fakeSpawner(['read-line', 'env:TEAM', 'env:CI', 'env:CLAUDE_NON_INTERACTIVE', 'env:HOME', 'cwd'])
    const dir = tempDir()
    const config = makeConfig(dir, { environmentVariables: { TEAM: 'platform' } })
    config.taskContext.relatedTasks = ['T-0']
    const final = await within((await spawner.spawnSession(config)).completion, 'completion')
    expect(final.stdout).toBe(
      `got: Task: Run the fake task\nTEAM=platform\nCI=true\nCLAUDE_NON_INTERACTIVE=true\nHOME=${process.env.HOME}\ncwd: ${fs.realpathSync(dir)}\n`,
    )
  })
})

describe('events', () => {
  it('delivers output in order, then exactly one session-ended, then the completion', async () => {
    const spawner = fakeSpawner(['flood-out:300000', 'out:last line'])
    const events = record(spawner)
    const order: string[] = []
    spawner.on('session-ended', () => order.push('ended'))
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    const final = await within(
      result.completion.then((s) => {
        order.push('completion')
        return s
      }),
      'completion',
    )
    expect(order).toEqual(['ended', 'completion'])
    const mine = events.filter(([, p]) => p.sessionId === result.sessionId).map(([name]) => name)
    expect(mine[0]).toBe('session-spawned')
    expect(mine[mine.length - 1]).toBe('session-ended')
    expect(mine.filter((n) => n === 'session-ended')).toHaveLength(1)
    expect(mine.slice(1, -1).every((n) => n === 'session-output')).toBe(true)
    const text = outputOf(events, result.sessionId)
    expect(text.length).toBe(300000 + 'last line\n'.length)
    expect(text.endsWith('last line\n')).toBe(true)
    expect(final.stdout).toBe(text)
    const ended = events.find(([name]) => name === 'session-ended')![1]
    expect(ended.status).toEqual(final)
  })

  it('session-output carries the stream type', async () => {
    const spawner = fakeSpawner(['out:to stdout', 'err:to stderr'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await within(result.completion, 'completion')
    expect(outputOf(events, result.sessionId, 'stdout')).toBe('to stdout\n')
    expect(outputOf(events, result.sessionId, 'stderr')).toBe('to stderr\n')
  })

  it('session-timeout fires, then the session ends timeout', async () => {
    const spawner = fakeSpawner(['hang'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir(), { timeout: 200 }))
    const final = await within(result.completion, 'completion')
    expect(final.state).toBe('timeout')
    expect(final.errorMessage).toBe('session timed out after 200 ms')
    const names = events.filter(([, p]) => p.sessionId === result.sessionId).map(([n]) => n)
    expect(names).toEqual(['session-spawned', 'session-timeout', 'session-ended'])
  })
})

describe('end states', () => {
  it('non-zero exit is failed with the code', async () => {
    const final = await within((await fakeSpawner(['exit:7']).spawnSession(makeConfig(tempDir()))).completion, 'end')
    expect(final.state).toBe('failed')
    expect(final.exitCode).toBe(7)
    expect(final.errorMessage).toBe('agent exited with code 7')
  })

  it('death by signal is crashed with the signal, and reported', async () => {
    const spawner = fakeSpawner(['out:' + 'y'.repeat(1500), 'err:panic: stack here', 'signal:SEGV'])
    const final = await within((await spawner.spawnSession(makeConfig(tempDir()))).completion, 'end')
    expect(final.state).toBe('crashed')
    expect(final.signal).toBe('SIGSEGV')
    expect(final.errorMessage).toContain('SIGSEGV')
    const [report] = spawner.getCrashReports()
    expect(report.sessionId).toBe(final.sessionId)
    expect(report.timestamp).toBeInstanceOf(Date)
    expect(report.signal).toBe('SIGSEGV')
    expect(report.lastState).toBe('running')
    expect(report.lastOutput).toHaveLength(1000)
    expect(report.lastOutput.endsWith('y\n')).toBe(true)
    expect(report.stackTrace).toBe('panic: stack here\n')
    expect(spawner.getCrashReports()).toHaveLength(1)
  })
})

describe('terminateSession', () => {
  it('graceful: SIGTERM to the group; ends terminated', async () => {
    const spawner = fakeSpawner(['out:up', 'hang'])
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await nextEvent(spawner, 'session-output')
    await within(spawner.terminateSession(result.sessionId), 'terminate')
    const status = spawner.getSessionStatus(result.sessionId)!
    expect(status.state).toBe('terminated')
    expect(status.signal).toBe('SIGTERM')
    expect(await result.completion).toEqual(status)
  })

  it('graceful on an agent that ignores SIGTERM: SIGKILL after the grace period', async () => {
    const spawner = fakeSpawner(['ignore-term', 'out:stubborn', 'hang'], { gracePeriodMs: 150 })
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await nextEvent(spawner, 'session-output')
    await within(spawner.terminateSession(result.sessionId, true), 'terminate')
    const status = spawner.getSessionStatus(result.sessionId)!
    expect(status.state).toBe('terminated')
    expect(status.signal).toBe('SIGKILL')
  })

  it('forced: SIGKILL at once', async () => {
    const spawner = fakeSpawner(['ignore-term', 'hang'])
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await within(spawner.terminateSession(result.sessionId, false), 'terminate', 4000)
    expect(spawner.getSessionStatus(result.sessionId)!.signal).toBe('SIGKILL')
  })

  it('rejects for an unknown id', async () => {
    const spawner = fakeSpawner(['exit:0'])
    await expect(spawner.terminateSession('claude-session-nope')).rejects.toMatchObject({
      code: 'ERR_UNKNOWN_SESSION',
      message: expect.stringContaining('claude-session-nope'),
    })
  })
})

describe('sendInput and endSession', () => {
  it('writes to the agent; endSession closes its stdin', async () => {
    const spawner = fakeSpawner(['echo-stdin'])
    const events = record(spawner)
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    spawner.sendInput(result.sessionId, 'second line\n')
    await until('echo', () => outputOf(events, result.sessionId).includes('echo: second line'))
    spawner.endSession(result.sessionId)
    const final = await within(result.completion, 'completion')
    expect(final.state).toBe('completed')
    expect(final.stdout).toContain('echo: Task: Run the fake task\n')
    expect(final.stdout.endsWith('echo: second line\n')).toBe(true)
  })

  it('throws for an unknown id and for a session that is not running', async () => {
    const spawner = fakeSpawner(['exit:0'])
    expect(() => spawner.sendInput('claude-session-nope', 'x')).toThrow(
      expect.objectContaining({ code: 'ERR_UNKNOWN_SESSION' }),
    )
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await within(result.completion, 'completion')
    expect(() => spawner.sendInput(result.sessionId, 'late')).toThrow(/not running \(state: completed\)/)
  })
})

describe('queries', () => {
  it('getSessionStatus returns a copy, or null for unknown ids', async () => {
    const spawner = fakeSpawner(['out:x'])
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    await within(result.completion, 'completion')
    const a = spawner.getSessionStatus(result.sessionId)!
    a.state = 'failed'
    a.metrics.errors = 99
    const b = spawner.getSessionStatus(result.sessionId)!
    expect(b.state).toBe('completed')
    expect(b.metrics.errors).toBe(0)
    expect(spawner.getSessionStatus('claude-session-unknown')).toBeNull()
  })

  it('getActiveSessions lists sessions in spawn order until they are cleaned up', async () => {
    const spawner = fakeSpawner(['hang'])
    const a = await spawner.spawnSession(makeConfig(tempDir()))
    const b = await spawner.spawnSession(makeConfig(tempDir()))
    expect(spawner.getActiveSessions().map((s) => s.sessionId)).toEqual([a.sessionId, b.sessionId])
    expect(spawner.getMetricsSummary().activeSessions).toBe(2)
    await spawner.terminateSession(a.sessionId, false)
    expect(spawner.getActiveSessions().map((s) => [s.sessionId, s.state])).toEqual([
      [a.sessionId, 'terminated'],
      [b.sessionId, 'running'],
    ])
    expect(spawner.cleanupCompletedSessions()).toBe(1)
    expect(spawner.getActiveSessions().map((s) => s.sessionId)).toEqual([b.sessionId])
    expect(spawner.getSessionStatus(a.sessionId)!.state).toBe('terminated')
  })

  it('getMetricsSummary counts every state once', async () => {
    const dir = tempDir()
    const ok = fakeSpawner(['exit:0'])
    for (let i = 0; i < 2; i++) await within((await ok.spawnSession(makeConfig(dir))).completion, 'ok')
    const bad = fakeSpawner(['exit:1'])
    await within((await bad.spawnSession(makeConfig(dir))).completion, 'failed')
    const summary = ok.getMetricsSummary()
    expect(summary).toEqual({
      totalSessions: 2,
      activeSessions: 0,
      completedSessions: 2,
      failedSessions: 0,
      crashedSessions: 0,
      avgExecutionTime: expect.any(Number),
      totalTokensUsed: 0,
    })
    expect(bad.getMetricsSummary().failedSessions).toBe(1)
  })

  it('keeps only historySize ended sessions', async () => {
    const spawner = fakeSpawner(['exit:0'], { historySize: 2 })
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const r = await spawner.spawnSession(makeConfig(tempDir()))
      ids.push(r.sessionId)
      await within(r.completion, 'completion')
    }
    expect(spawner.getSessionStatus(ids[0])).toBeNull()
    expect(spawner.getSessionStatus(ids[2])!.state).toBe('completed')
    expect(spawner.getMetricsSummary().totalSessions).toBe(2)
  })
})

describe('process tree', () => {
  for (const how of ['terminate', 'timeout'] as const) {
    it(`after ${how}, no process of the agent's group remains`, async () => {
      const spawner = fakeSpawner(['spawn-sleepers:2', 'out:ready', 'hang'])
      const events = record(spawner)
      const result = await spawner.spawnSession(makeConfig(tempDir(), how === 'timeout' ? { timeout: 500 } : {}))
      const pgid = result.status.pid!
      await until('both sleepers', () => pidsAfter('sleeper: ', outputOf(events, result.sessionId)).length === 2)
      const sleepers = pidsAfter('sleeper: ', outputOf(events, result.sessionId))
      expect(sleepers.every(alive)).toBe(true)
      expect(groupMembers(pgid).length).toBe(3)

      if (how === 'terminate') await within(spawner.terminateSession(result.sessionId), 'terminate')
      const final = await within(result.completion, 'end')
      expect(final.state).toBe(how === 'terminate' ? 'terminated' : 'timeout')
      // Killed processes close their pipes a moment before they are zombies.
      await until('the group to be gone', () => groupMembers(pgid).length === 0 && sleepers.every((p) => !alive(p)))
    })
  }

  for (const step of ['spawn-escapee', 'spawn-daemon'] as const) {
    it(`a process that left the group (setsid, ${step === 'spawn-escapee' ? 'holding the output' : 'holding nothing'}) is found by its session id and killed after terminate`, async () => {
      const prefix = step === 'spawn-escapee' ? 'escapee: ' : 'daemon: '
      const spawner = fakeSpawner([step, 'hang'])
      const events = record(spawner)
      const result = await spawner.spawnSession(makeConfig(tempDir()))
      await until('its pid', () => pidsAfter(prefix, outputOf(events, result.sessionId)).length === 1)
      const [escaped] = pidsAfter(prefix, outputOf(events, result.sessionId))
      expect(alive(escaped)).toBe(true)
      // Out of the group: the group signal does not reach it.
      expect(groupMembers(result.status.pid!)).not.toContain(escaped)
      await within(spawner.terminateSession(result.sessionId), 'terminate')
      expect((await result.completion).state).toBe('terminated')
      await until('the escaped process to be killed', () => !alive(escaped))
    })
  }

  it('background processes left behind by an agent that exits are stopped too', async () => {
    const spawner = fakeSpawner(['spawn-sleepers:2', 'exit:0'])
    const result = await spawner.spawnSession(makeConfig(tempDir()))
    const final = await within(result.completion, 'end')
    expect(final.state).toBe('completed')
    const sleepers = pidsAfter('sleeper: ', final.stdout)
    expect(sleepers).toHaveLength(2)
    await until('the group to be gone', () => groupMembers(result.status.pid!).length === 0 && sleepers.every((p) => !alive(p)))
  })
})
