// End to end: a real Claude Code session killed with SIGKILL in the middle of its
// task comes back through the recovery manager, resuming the same conversation.
import * as fs from 'node:fs'
import * as path from 'node:path'

import SessionRecoveryManager from 'claude-session-spawner/session-recovery'
import { type RecoveryConfig } from 'claude-session-spawner'

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

/**
 * A Claude Code session that ran `command` and is then left waiting for a model that
 * never answers; `finish` is the model's answer after the restart. The session is
 * ready to be killed once Claude Code's transcript holds the command and its result
 * (it writes the transcript a moment after each request).
 */
async function midTask(command: string, finish: string, recovery: Partial<RecoveryConfig>) {
  const model = await scripted([
    { toolUse: { name: 'Bash', input: { command, description: 'first step' } } },
    { hang: true },
    { text: finish },
  ])
  const config = claudeConfig(model)
  const spawner = claudeSpawner()
  const manager = new SessionRecoveryManager(spawner, {
    enabled: true,
    maxRetries: 2,
    retryDelay: 100,
    backoffMultiplier: 2,
    saveCrashDumps: false,
    strategy: 'delayed',
    ...recovery,
  })
  const { sessionId, status } = await spawner.spawnSession(config)
  const conversation = status.claudeSessionId!
  await until('the second model request (the command ran)', () => model.conversation.length >= 2, E2E_MS)
  const configDir = config.environmentVariables!.CLAUDE_CONFIG_DIR
  const recorded = () => transcripts(configDir, conversation).some((f) => fs.readFileSync(f, 'utf8').includes('tool_result'))
  await until('the transcript to hold the command and its result', recorded, E2E_MS)
  return { model, config, configDir, spawner, manager, sessionId, status, conversation }
}

describe('recovering Claude Code sessions', () => {
  it('resumes the conversation of a session killed mid-task; the new session completes', async () => {
    const { model, config, spawner, manager, sessionId, status, conversation } = await midTask(
      'echo step-one > one.txt',
      'Picked up where we left off; all done.',
      { saveCrashDumps: true, crashDumpDirectory: path.join(tempDir(), 'dumps') },
    )
    expect(fs.readFileSync(path.join(config.workingDirectory, 'one.txt'), 'utf8')).toBe('step-one\n')
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
    const { model, configDir, manager, spawner, sessionId, status } = await midTask('echo once > once.txt', 'Started over and finished.', {
      maxRetries: 1,
      retryDelay: 0,
      backoffMultiplier: 1,
      strategy: 'manual',
    })
    const pending = nextEvent(manager, 'crash-analyzed', (e: any) => e.sessionId === sessionId)
    process.kill(status.pid!, 'SIGKILL')
    await pending
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
