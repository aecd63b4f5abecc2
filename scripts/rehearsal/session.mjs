// Rehearsal consumer: one real Claude Code session through the installed package, against
// the project's scripted model server on 127.0.0.1. The agent writes a file; the session
// must complete and the file must be there.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import ClaudeSessionSpawner from 'claude-session-spawner'

const { ScriptedModel } = createRequire(import.meta.url)(process.env.REHEARSAL_MODEL_SERVER)
const temp = (label) => mkdtempSync(join(tmpdir(), `css-rehearsal-${label}-`))
const dir = temp('work')
const model = await ScriptedModel.start([
  { toolUse: { name: 'Write', input: { file_path: join(dir, 'HELLO.md'), content: 'hello from the rehearsal\n' } } },
  { text: 'HELLO.md is written.' },
])
const spawner = new ClaudeSessionSpawner({ claudePath: process.env.REHEARSAL_CLAUDE })
try {
  const ended = new Promise((resolve) => spawner.on('session-ended', ({ status }) => resolve(status)))
  let timer
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('no session-ended within 90 s')), 90_000)
  })
  const { sessionId } = await spawner.spawnSession({
    workingDirectory: dir,
    charter: {
      identity: { name: 'Rehearsal VP', email: 'vp@example.com', role: 'Engineer' },
      objectives: ['Write HELLO.md'],
      constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] },
      resources: { maxTokens: 50_000, maxExecutionTime: 90_000, allowedTools: ['read', 'write'] },
    },
    taskContext: { taskId: 'REHEARSAL-1', description: 'Write HELLO.md', priority: 'high' },
    memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
    environmentVariables: { ...model.env(temp('config')), HOME: temp('home') },
  })
  const status = await Promise.race([ended, deadline]).finally(() => clearTimeout(timer))
  assert.equal(status.state, 'completed', `the session ended ${status.state}: ${status.error ?? ''}`)
  assert.equal(readFileSync(join(dir, 'HELLO.md'), 'utf8'), 'hello from the rehearsal\n')
  console.log(`session ${sessionId}: completed, HELLO.md written by Claude Code`)
} finally {
  await model.stop()
}
