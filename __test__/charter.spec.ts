// The charter enforced on the real Claude Code CLI: the scripted model tries what the
// charter forbids, and it never runs.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { E2E_MS, claudeConfig, claudeSpawner, lastRequestText, scripted } from './claude'
import { within } from './support'

jest.setTimeout(3 * E2E_MS)

function violationsOf(s: ReturnType<typeof claudeSpawner>): any[] {
  const seen: any[] = []
  s.on('policy-violation', (v) => seen.push(v))
  return seen
}

describe('the charter, enforced', () => {
  it('denies `rm -rf` inside a compound command; the files stay; the model reads why', async () => {
    const model = await scripted([
      { toolUse: { name: 'Bash', input: { command: 'cd . && ls && rm -rf important', description: 'clean up' } } },
      { text: 'I was not allowed to delete it.' },
    ])
    const config = claudeConfig(model)
    config.charter.constraints.forbiddenCommands = ['rm -rf']
    const important = path.join(config.workingDirectory, 'important')
    fs.mkdirSync(important)
    fs.writeFileSync(path.join(important, 'keep.txt'), 'precious')
    const s = claudeSpawner()
    const violations = violationsOf(s)
    const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)

    expect(final.state).toBe('completed')
    expect(fs.readFileSync(path.join(important, 'keep.txt'), 'utf8')).toBe('precious')
    expect(lastRequestText(model)).toContain('runs `rm -rf`, a forbidden command')
    expect(violations).toHaveLength(1)
    expect(violations[0]).toMatchObject({
      sessionId: final.sessionId,
      toolName: 'Bash',
      input: { command: 'cd . && ls && rm -rf important' },
      rule: 'forbidden-command',
      detail: 'rm -rf',
    })
    expect(violations[0].timestamp).toBeInstanceOf(Date)
    const { sessionId: _, ...recorded } = violations[0]
    expect(final.violations).toEqual([recorded])
    expect(final.metrics.commandsExecuted).toBe(0)
  })

  it('denies `git push --force origin main`', async () => {
    const model = await scripted([
      { toolUse: { name: 'Bash', input: { command: 'git push --force origin main', description: 'publish' } } },
      { text: 'Not allowed.' },
    ])
    const config = claudeConfig(model)
    config.charter.constraints.forbiddenCommands = ['rm -rf', 'git push --force']
    const s = claudeSpawner()
    const violations = violationsOf(s)
    const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)
    expect(final.state).toBe('completed')
    expect(violations.map((v) => [v.rule, v.detail])).toEqual([['forbidden-command', 'git push --force']])
    expect(lastRequestText(model)).toContain('`git push --force`')
  })

  it('denies a Write whose content matches a forbidden pattern; no file is written', async () => {
    const model = await scripted([
      { toolUse: { name: 'Write', input: { file_path: 'PLACEHOLDER', content: 'aws_secret = AKIAABCDEFGHIJKLMNOP\n' } } },
      { text: 'I will not write secrets.' },
    ])
    const config = claudeConfig(model)
    config.charter.constraints.forbiddenPatterns = [/AKIA[0-9A-Z]{16}/]
    const target = path.join(config.workingDirectory, 'config.env')
    model.script[0].toolUse.input.file_path = target
    const s = claudeSpawner()
    const violations = violationsOf(s)
    const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)
    expect(fs.existsSync(target)).toBe(false)
    expect(violations.map((v) => [v.rule, v.detail])).toEqual([['forbidden-pattern', '/AKIA[0-9A-Z]{16}/']])
    expect(final.metrics.filesModified).toBe(0)
    expect(lastRequestText(model)).toContain('matches the forbidden pattern')
  })

  it('denies a tool outside allowedTools', async () => {
    const model = await scripted([
      { toolUse: { name: 'WebFetch', input: { url: 'https://example.com', prompt: 'read it' } } },
      { text: 'No web access.' },
    ])
    const config = claudeConfig(model)
    config.charter.resources.allowedTools = ['read', 'bash']
    // Claude Code is offered WebFetch, so the charter (not the tool list) refuses it.
    const s = claudeSpawner({ extraArgs: ['--tools', 'Read,Bash,WebFetch'] })
    const violations = violationsOf(s)
    const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)
    expect(final.state).toBe('completed')
    expect(violations.map((v) => [v.rule, v.detail, v.toolName])).toEqual([['allowed-tools', 'WebFetch', 'WebFetch']])
  })

  for (const approve of [true, false]) {
    it(`a \`deploy\` command runs only with the daemon's approval (handler ${approve ? 'allows' : 'denies'})`, async () => {
      const model = await scripted([
        { toolUse: { name: 'Bash', input: { command: 'echo shipped > deploy.log', description: 'deploy' } } },
        { text: 'Deploy step done.' },
      ])
      const config = claudeConfig(model)
      config.charter.constraints.requiredApprovals = ['deploy']
      const asked: any[] = []
      const s = claudeSpawner({
        approvalHandler: async (request) => {
          asked.push(request)
          return approve
        },
      })
      const violations = violationsOf(s)
      const result = await s.spawnSession(config)
      const final = await within(result.completion, 'the session', E2E_MS)

      expect(asked).toEqual([
        { sessionId: result.sessionId, toolName: 'Bash', input: { command: 'echo shipped > deploy.log', description: 'deploy' }, reason: 'deploy' },
      ])
      const log = path.join(config.workingDirectory, 'deploy.log')
      expect(final.metrics.approvalPrompts).toBeGreaterThanOrEqual(1)
      if (approve) {
        expect(fs.readFileSync(log, 'utf8')).toBe('shipped\n')
        expect(final.metrics.escalations).toBe(0)
        expect(final.metrics.commandsExecuted).toBe(1)
        expect(violations).toEqual([])
      } else {
        expect(fs.existsSync(log)).toBe(false)
        expect(final.metrics.escalations).toBe(1)
        expect(final.metrics.commandsExecuted).toBe(0)
        expect(violations.map((v) => [v.rule, v.detail])).toEqual([['required-approval', 'deploy']])
        expect(lastRequestText(model)).toContain('need the daemon')
      }
    })
  }

  it('no approval handler, or one that never answers, is a no', async () => {
    const model = await scripted([
      { toolUse: { name: 'Bash', input: { command: 'echo x > deploy.txt', description: 'deploy' } } },
      { text: 'Waiting for approval did not work.' },
    ])
    const config = claudeConfig(model)
    config.charter.constraints.requiredApprovals = ['deploy']
    const s = claudeSpawner({ approvalHandler: () => new Promise<boolean>(() => {}), approvalTimeoutMs: 300 })
    const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)
    expect(fs.existsSync(path.join(config.workingDirectory, 'deploy.txt'))).toBe(false)
    expect(final.metrics.escalations).toBe(1)
  })

  it('stops a session that passes its token budget: failed, with an event', async () => {
    const model = await scripted([
      { text: 'Thinking hard...', toolUse: { name: 'Bash', input: { command: 'sleep 5', description: 'wait' } }, usage: { input: 900, output: 50 } },
      { text: 'More.', usage: { input: 900, output: 50 } },
    ])
    const config = claudeConfig(model)
    config.charter.resources.maxTokens = 500
    const s = claudeSpawner()
    const budgets: any[] = []
    s.on('budget-exceeded', (e) => budgets.push(e))
    const result = await s.spawnSession(config)
    const final = await within(result.completion, 'the session', E2E_MS)
    expect(final.state).toBe('failed')
    expect(budgets).toHaveLength(1)
    expect(budgets[0]).toMatchObject({ sessionId: result.sessionId, limit: 500 })
    expect(budgets[0].used).toBeGreaterThan(500)
    expect(final.errorMessage).toBe(`token budget exceeded (${budgets[0].used} > 500)`)
  })

  for (const inheritEnv of [false, true]) {
    it(`a daemon secret ${inheritEnv ? 'reaches' : 'does not reach'} a Bash command with inheritEnv: ${inheritEnv}`, async () => {
      const model = await scripted([
        { toolUse: { name: 'Bash', input: { command: 'echo "canary=$CANARY_SECRET" > canary.txt', description: 'look' } } },
        { text: 'Looked.' },
      ])
      const config = claudeConfig(model)
      process.env.CANARY_SECRET = 'tweet-tweet-4711'
      try {
        const s = claudeSpawner({ inheritEnv })
        const final = await within((await s.spawnSession(config)).completion, 'the session', E2E_MS)
        expect(final.state).toBe('completed')
      } finally {
        delete process.env.CANARY_SECRET
      }
      const seen = fs.readFileSync(path.join(config.workingDirectory, 'canary.txt'), 'utf8')
      expect(seen).toBe(inheritEnv ? 'canary=tweet-tweet-4711\n' : 'canary=\n')
    })
  }
})
