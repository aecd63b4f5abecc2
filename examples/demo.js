'use strict'
// A tour of the spawner with the project's fake agent (a real process driven by its
// argument vector): a session that works and finishes, one that times out, one
// that is terminated together with the background job it started.
//
//   npm run demo        (builds the addon and the fake agent first)
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ClaudeSessionSpawner = require('..').default

const AGENT = path.join(__dirname, '..', 'target', 'debug', 'examples', 'fake_agent')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'claude-session-spawner-demo-'))

const config = (description, extra = {}) => ({
  workingDirectory: dir,
  charter: {
    identity: { name: 'Demo VP', email: 'demo-vp@example.com', role: 'Engineer' },
    objectives: ['Show the session lifecycle'],
    constraints: { forbiddenCommands: ['rm -rf'], forbiddenPatterns: [/password/i], requiredApprovals: ['deploy'] },
    resources: { maxTokens: 10000, maxExecutionTime: 60000, allowedTools: ['read', 'bash'] },
  },
  taskContext: { taskId: 'DEMO-1', description, priority: 'high' },
  memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
  ...extra,
})

function watch(spawner, label) {
  spawner.on('session-spawned', ({ sessionId, pid }) => console.log(`[${label}] spawned ${sessionId} (pid ${pid})`))
  spawner.on('session-output', ({ type, data }) =>
    data.split('\n').filter(Boolean).forEach((line) => console.log(`[${label}] ${type}: ${line}`)),
  )
  spawner.on('session-timeout', () => console.log(`[${label}] timeout: stopping its process group`))
  spawner.on('session-ended', ({ status }) =>
    console.log(
      `[${label}] ended ${status.state} after ${status.executionTime} ms` +
        (status.errorMessage ? ` (${status.errorMessage})` : '') +
        ` metrics ${JSON.stringify(status.metrics)}`,
    ),
  )
}

async function main() {
  const worker = new ClaudeSessionSpawner({
    claudePath: AGENT,
    protocol: 'text',
    extraArgs: ['read-line', 'out:Executed command: npm test', 'out:Wrote file src/fix.rs', 'sleep:300', 'out:done'],
  })
  watch(worker, 'work')
  const work = await worker.spawnSession(config('Fix the failing test'))
  await work.completion

  const sleeper = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['out:thinking...', 'hang'] })
  watch(sleeper, 'slow')
  await (await sleeper.spawnSession(config('A task that takes too long', { timeout: 500 }))).completion

  const busy = new ClaudeSessionSpawner({
    claudePath: AGENT,
    protocol: 'text',
    extraArgs: ['spawn-sleepers:2', 'out:started two background jobs', 'hang'],
    gracePeriodMs: 1000,
  })
  watch(busy, 'busy')
  const job = await busy.spawnSession(config('A task the daemon cancels'))
  await new Promise((resolve) => busy.once('session-output', resolve))
  await busy.terminateSession(job.sessionId)
  const final = busy.getSessionStatus(job.sessionId)
  console.log(`[busy] ${final.state} by ${final.signal} sent to process group ${job.status.pid}, background jobs included`)

  console.log('\nsummary of the first spawner:', worker.getMetricsSummary())
  console.log(`session directory: ${worker.getSessionDirectory(work.sessionId)}`)
  console.log(fs.readdirSync(worker.getSessionDirectory(work.sessionId)).join(', '))
  fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
