// End to end: a real Claude Code session killed with SIGKILL in the middle of its
// task comes back through the recovery manager, resuming the same conversation.
import * as fs from 'node:fs'
import * as path from 'node:path'

import SessionRecoveryManager from 'claude-session-spawner/session-recovery'

import { E2E_MS, claudeConfig, claudeSpawner, scripted } from './claude'
import { nextEvent, tempDir, until, within } from './support'

jest.setTimeout(3 * E2E_MS)

const RESTARTED = 'This session was restarted after a crash'

/** Transcripts Claude Code wrote for conversation `id` under `configDir`. */
function transcripts(configDir: string, id: string): string[] {
  const projects = path.join(configDir, 'projects')
  if (!fs.existsSync(projects)) return []
  return fs
    .readdirSync(projects)
    .map((d) => path.join(projects, d, `${id}.jsonl`))
    .filter((f) => fs.existsSync(f))
}

describe('recovering Claude Code sessions', () => {
  it('resumes the conversation of a session killed mid-task; the new session completes', async () => {
    // The first answer runs a command; the model then never answers, so the agent is
    // mid-task when it is killed. After the restart, the model finishes.
    const model = await scripted([
      { toolUse: { name: 'Bash', input: { command: 'echo step-one > one.txt', description: 'first step' } } },
      { hang: true },
      { text: 'Picked up where we left off; all done.' },
    ])
    const config = claudeConfig(model)
    const spawner = claudeSpawner()
    const manager = new SessionRecoveryManager(spawner, {
      enabled: true,
      maxRetries: 2,
      retryDelay: 100,
      backoffMultiplier: 2,
      saveCrashDumps: true,
      crashDumpDirectory: path.join(tempDir(), 'dumps'),
      strategy: 'delayed',
    })
    const { sessionId, status } = await spawner.spawnSession(config)
    const conversation = status.claudeSessionId!

    await until('the second model request (the command ran)', () => model.conversation.length >= 2, E2E_MS)
    expect(fs.readFileSync(path.join(config.workingDirectory, 'one.txt'), 'utf8')).toBe('step-one\n')
    // Claude Code writes its transcript a moment after the request; kill once the command is in it.
    const configDir = config.environmentVariables!.CLAUDE_CONFIG_DIR
    const recorded = () => transcripts(configDir, conversation).some((f) => fs.readFileSync(f, 'utf8').includes('tool_result'))
    await until('the transcript to hold the command and its result', recorded, E2E_MS)
    const analyzed = nextEvent<any>(manager, 'crash-analyzed', (e) => e.sessionId === sessionId)
    const dumped = nextEvent<any>(manager, 'crash-dump-saved', (e) => e.sessionId === sessionId)
    const succeeded = nextEvent<any>(manager, 'recovery-succeeded', (e) => e.sessionId === sessionId)
    process.kill(status.pid!, 'SIGKILL')

    const { analysis } = await analyzed
    expect(analysis).toMatchObject({ crashType: 'unknown', signal: 'SIGKILL' })
    expect(spawner.getSessionStatus(sessionId)).toMatchObject({ state: 'crashed', signal: 'SIGKILL' })
    const done = await within(succeeded, 'the recovered session', 2 * E2E_MS)

    const next = spawner.getSessionStatus(done.newSessionId)!
    expect(next.state).toBe('completed')
    // The same conversation, continued: Claude Code was started with --resume.
    expect(next.claudeSessionId).toBe(conversation)
    const state = manager.getRecoveryStatus(sessionId)!
    expect(state.status).toBe('succeeded')
    expect(state.attempts).toEqual([
      expect.objectContaining({ attemptNumber: 1, success: true, resumed: true, newSessionId: done.newSessionId, note: `resumed conversation ${conversation}` }),
    ])
    // The model saw the earlier conversation (the command and its result) and the restart note.
    const last = JSON.stringify(model.conversation.at(-1).body.messages)
    expect(last).toContain('echo step-one > one.txt')
    expect(last).toContain(RESTARTED)
    expect(manager.getRecoveryStats()).toMatchObject({
      totalCrashes: 1,
      totalRecoveryAttempts: 1,
      successfulRecoveries: 1,
      failedRecoveries: 0,
      recoveryRate: 1,
    })

    // The dump names the CLI version and keeps the crashed session's output.
    const dump = JSON.parse(fs.readFileSync((await dumped).filepath, 'utf8'))
    expect(dump.cliVersion).toMatch(/^\d+\.\d+\.\d+/)
    expect(dump.claudeSessionId).toBe(conversation)
    expect(dump.stdoutTail).toContain('"subtype":"init"')
    expect(dump.config.environmentVariables.ANTHROPIC_API_KEY).toBe('[redacted]')
  })

  it('starts afresh with the original task when the transcript is gone, and says so', async () => {
    const model = await scripted([
      { toolUse: { name: 'Bash', input: { command: 'echo once > once.txt', description: 'first step' } } },
      { hang: true },
      { text: 'Started over and finished.' },
    ])
    const config = claudeConfig(model)
    const spawner = claudeSpawner()
    const manager = new SessionRecoveryManager(spawner, {
      enabled: true,
      maxRetries: 1,
      retryDelay: 0,
      backoffMultiplier: 1,
      saveCrashDumps: false,
      strategy: 'manual',
    })
    const { sessionId, status } = await spawner.spawnSession(config)
    await until('the second model request', () => model.conversation.length >= 2, E2E_MS)
    const pending = nextEvent(manager, 'crash-analyzed', (e: any) => e.sessionId === sessionId)
    process.kill(status.pid!, 'SIGKILL')
    await pending
    const configDir = config.environmentVariables!.CLAUDE_CONFIG_DIR
    const files = transcripts(configDir, status.claudeSessionId!)
    expect(files).toHaveLength(1)
    for (const f of files) fs.unlinkSync(f)

    const succeeded = nextEvent<any>(manager, 'recovery-succeeded', (e) => e.sessionId === sessionId)
    await expect(manager.triggerManualRecovery(sessionId)).resolves.toBe(true)
    const done = await within(succeeded, 'the fresh session', 2 * E2E_MS)
    const attempt = manager.getRecoveryStatus(sessionId)!.attempts[0]
    expect(attempt.resumed).toBe(false)
    expect(attempt.note).toMatch(/no transcript of conversation .* fresh session with the original task/)
    expect(spawner.getSessionStatus(done.newSessionId)!.claudeSessionId).not.toBe(status.claudeSessionId)
    const first = JSON.stringify(model.conversation.at(-1).body.messages)
    expect(first).toContain('Run the fake task')
    expect(first).not.toContain(RESTARTED)
  })
})
