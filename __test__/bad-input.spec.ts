// Wrong input from JavaScript: a TypeError naming the field, or an Error naming the
// cause; never a crash of Node.
import ClaudeSessionSpawner from 'claude-session-spawner'

import { FAKE_AGENT, fakeSpawner, makeConfig, tempDir } from './support'

function withPath(config: any, path: string, value: unknown): any {
  const copy = structuredClone(config)
  const keys = path.split('.')
  let at = copy
  for (const key of keys.slice(0, -1)) at = at[key]
  if (value === undefined) delete at[keys[keys.length - 1]]
  else at[keys[keys.length - 1]] = value
  return copy
}

describe('config validation', () => {
  const spawner = () => fakeSpawner(['exit:0'])
  const base = () => makeConfig(tempDir(), { charter: { ...makeConfig('/').charter, constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] } } })

  const cases: Array<[string, unknown, string]> = [
    ['charter.objectives', 'ship it', 'config.charter.objectives must be an array of strings'],
    ['charter.objectives', ['ok', 3], 'config.charter.objectives must be an array of strings'],
    ['workingDirectory', 42, 'config.workingDirectory must be a string'],
    ['workingDirectory', undefined, 'config.workingDirectory is required (a string)'],
    ['charter.identity.email', undefined, 'config.charter.identity.email is required (a string)'],
    ['charter.resources.maxTokens', '100', 'config.charter.resources.maxTokens must be a non-negative integer'],
    ['charter.resources.allowedTools', null, 'config.charter.resources.allowedTools is required (an array of strings)'],
    ['taskContext.priority', 'urgent', "config.taskContext.priority must be one of 'critical', 'high', 'medium', 'low'"],
    ['taskContext.relatedTasks', 'T-1', 'config.taskContext.relatedTasks must be an array of strings'],
    ['memory', undefined, 'config.memory is required (an object)'],
    ['memory.conversationHistory', {}, 'config.memory.conversationHistory must be an array'],
    ['timeout', -1, 'config.timeout must be a non-negative integer'],
    ['timeout', 'soon', 'config.timeout must be a non-negative integer'],
    ['verbose', 'yes', 'config.verbose must be a boolean'],
    ['environmentVariables', { PORT: 8080 }, 'config.environmentVariables.PORT must be a string without NUL characters'],
  ]

  it.each(cases)('%s = %j is a TypeError naming the field', async (field, value, message) => {
    const error = await spawner().spawnSession(withPath(base(), field, value)).catch((e) => e)
    expect(error).toBeInstanceOf(TypeError)
    expect(error.message).toBe(message)
    expect(error.code).toBe('ERR_INVALID_CONFIG')
  })

  it('a recent action timestamp must be a valid Date', async () => {
    const config = base()
    config.memory.recentActions = [{ timestamp: new Date('not a date'), action: 'a', result: 'r' }]
    await expect(spawner().spawnSession(config)).rejects.toThrow(
      new TypeError('config.memory.recentActions[0].timestamp must be a valid Date'),
    )
  })

  it('a config that is not an object is a TypeError', async () => {
    await expect(spawner().spawnSession(null as any)).rejects.toThrow(new TypeError('config must be an object'))
    await expect(spawner().spawnSession('cfg' as any)).rejects.toThrow(TypeError)
  })

  it('forbiddenPatterns take RegExp objects (flags honoured) and strings', async () => {
    const config = base()
    config.charter.constraints.forbiddenPatterns = [/token\s*=/gi, 'password' as any]
    const result = await spawner().spawnSession(config)
    expect(result.status.state).toBe('running')
    const md = require('node:fs').readFileSync(`${config.workingDirectory}/.vp-daemon/sessions/${result.sessionId}/CLAUDE.md`, 'utf8')
    expect(md).toContain('`/token\\s*=/gi`')
    expect(md).toContain('`/password/`')
  })

  it('a pattern the Rust engine cannot compile is a TypeError naming it', async () => {
    const config = base()
    config.charter.constraints.forbiddenPatterns = [/ok/, /secret(?!ive)/]
    const error = await spawner().spawnSession(config).catch((e) => e)
    expect(error).toBeInstanceOf(TypeError)
    expect(error.field).toBe('config.charter.constraints.forbiddenPatterns[1]')
    expect(error.message).toContain('/secret(?!ive)/')
    expect(error.message).toContain('look-around')
  })

  it('a workingDirectory that does not exist rejects naming it, and is recorded failed', async () => {
    const s = spawner()
    const missing = `${tempDir()}/not-here`
    const error = await s.spawnSession(makeConfig(missing)).catch((e) => e)
    expect(error).toBeInstanceOf(Error)
    expect(error).not.toBeInstanceOf(TypeError)
    expect(error.code).toBe('ERR_WORKING_DIRECTORY')
    expect(error.message).toContain(missing)
    expect(s.getSessionStatus(error.sessionId)!.state).toBe('failed')
    expect(s.getMetricsSummary().failedSessions).toBe(1)
  })

  it('an agent that cannot be started rejects naming the path and the OS error', async () => {
    const s = new ClaudeSessionSpawner({ claudePath: '/no/such/agent', protocol: 'text' })
    const ended = new Promise((resolve) => s.once('session-ended', resolve))
    const error = await s.spawnSession(makeConfig(tempDir())).catch((e) => e)
    expect(error.code).toBe('ERR_SPAWN_FAILED')
    expect(error.message).toContain('/no/such/agent')
    expect(error.message).toContain('No such file or directory')
    expect(await ended).toMatchObject({ sessionId: error.sessionId, status: { state: 'failed' } })
    expect(s.getSessionStatus(error.sessionId)!.errorMessage).toBe(error.message)
  })

  it('a file that is not executable rejects with EACCES', async () => {
    const s = new ClaudeSessionSpawner({ claudePath: __filename, protocol: 'text' })
    await expect(s.spawnSession(makeConfig(tempDir()))).rejects.toThrow(/Permission denied/)
  })
})

describe('option and argument validation', () => {
  it('unknown or mistyped options are TypeErrors naming them', () => {
    let typo: any
    try {
      new ClaudeSessionSpawner({ gracePeriod: 10 } as any)
    } catch (e) {
      typo = e
    }
    expect(typo).toBeInstanceOf(TypeError)
    expect(typo.message).toMatch(/^options\.gracePeriod is not an option \(known: claudePath, protocol, .*gracePeriodMs/)
    expect(() => new ClaudeSessionSpawner({ protocol: 'xml' } as any)).toThrow(
      new TypeError("options.protocol must be 'stream-json' or 'text'"),
    )
    expect(() => new ClaudeSessionSpawner({ extraArgs: '--x' } as any)).toThrow(
      new TypeError('options.extraArgs must be an array of strings'),
    )
    expect(() => new ClaudeSessionSpawner(5 as any)).toThrow(new TypeError('options must be an object'))
  })

  it('method arguments of the wrong type are TypeErrors', async () => {
    const s = new ClaudeSessionSpawner({ claudePath: FAKE_AGENT })
    expect(() => s.getSessionStatus(5 as any)).toThrow(new TypeError('sessionId must be a string'))
    expect(() => s.sendInput('claude-session-x', 5 as any)).toThrow(new TypeError('input must be a string'))
    await expect(s.terminateSession(undefined as any)).rejects.toThrow(TypeError)
  })
})
