'use strict'
// Real Claude Code sessions through the native spawner, three at once, printing
// lifecycle events, tool calls, tokens and metrics as they happen.
//
//   npm run demo
//
// With ANTHROPIC_API_KEY set, the sessions talk to Anthropic. Without it, each
// session gets the project's scripted model server on 127.0.0.1, so the whole thing
// runs with no account and no network: the CLI, its tool calls and the files it
// writes are real; only the model's answers are scripted.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ClaudeSessionSpawner = require('..').default
const { ScriptedModel } = require('../test-support/model-server.js')

const CLAUDE = path.join(__dirname, '..', 'node_modules', '.bin', 'claude')
const live = Boolean(process.env.ANTHROPIC_API_KEY)
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'claude-session-spawner-demo-'))

const TASKS = [
  {
    label: 'survey',
    description: 'List the files here and write a one-paragraph SUMMARY.md about them.',
    script: (dir) => [
      { text: 'Let me look around.', toolUse: { name: 'Bash', input: { command: 'ls -la', description: 'list files' } } },
      { toolUse: { name: 'Write', input: { file_path: path.join(dir, 'SUMMARY.md'), content: '# Summary\n\nA README and a small script.\n' } } },
      { text: 'SUMMARY.md is written.' },
    ],
  },
  {
    label: 'tests',
    description: 'Run the test script and report whether it passes.',
    script: () => [
      { toolUse: { name: 'Bash', input: { command: 'sh test.sh', description: 'run the tests' } }, delayMs: 300 },
      { text: 'The tests pass: 3 of 3.' },
    ],
  },
  {
    label: 'charter',
    description: 'Publish the release notes to the web.',
    // The charter allows bash, read and write only: the WebFetch call is denied.
    script: () => [
      { toolUse: { name: 'WebFetch', input: { url: 'https://example.com/publish', prompt: 'publish' } } },
      { text: 'My charter does not allow web access, so I did not publish anything.' },
    ],
  },
]

function config(task, dir, env) {
  return {
    workingDirectory: dir,
    charter: {
      identity: { name: 'Demo VP', email: 'demo-vp@example.com', role: 'Staff Engineer' },
      objectives: ['Finish the task', 'Stay inside the charter'],
      constraints: { forbiddenCommands: ['rm -rf', 'git push --force'], forbiddenPatterns: [/password\s*=/i], requiredApprovals: ['deploy'] },
      resources: { maxTokens: 50000, maxExecutionTime: 120000, allowedTools: ['bash', 'read', 'write'] },
    },
    taskContext: { taskId: `DEMO-${task.label}`, description: task.description, priority: 'high' },
    memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
    environmentVariables: env,
    timeout: 120000,
  }
}

function describeCall(block) {
  const input = block.input ?? {}
  return input.command ?? input.file_path ?? input.url ?? JSON.stringify(input)
}

async function main() {
  // Offer WebFetch too, so the charter's check (not Claude Code's tool list) is what refuses it.
  const spawner = new ClaudeSessionSpawner({ claudePath: CLAUDE, extraArgs: ['--tools', 'Bash,Read,Write,WebFetch'] })
  const labels = new Map()
  const say = (sessionId, text) => console.log(`[${labels.get(sessionId) ?? '?'}] ${text}`)
  spawner.on('session-message', ({ sessionId, message }) => {
    if (message.type === 'assistant') {
      for (const block of message.message?.content ?? []) {
        if (block.type === 'text' && block.text) say(sessionId, `says: ${block.text}`)
        if (block.type === 'tool_use') say(sessionId, `calls ${block.name}: ${describeCall(block)}`)
      }
    } else if (message.type === 'control_request' && message.request?.subtype === 'can_use_tool') {
      say(sessionId, `asks to use ${message.request.tool_name}`)
    } else if (message.type === 'user') {
      for (const block of message.message?.content ?? []) {
        if (block.type === 'tool_result') {
          const text = typeof block.content === 'string' ? block.content : JSON.stringify(block.content)
          say(sessionId, `${block.is_error ? 'tool refused/failed' : 'tool result'}: ${text.split('\n')[0].slice(0, 100)}`)
        }
      }
    } else if (message.type === 'result') {
      const u = message.usage ?? {}
      say(sessionId, `turn done: ${u.input_tokens} in / ${u.output_tokens} out tokens, $${message.total_cost_usd}`)
    }
  })
  spawner.on('session-retry', ({ sessionId, attempt, error }) => say(sessionId, `API retry ${attempt} (${error})`))
  spawner.on('session-ended', ({ sessionId, status }) =>
    say(
      sessionId,
      `ended ${status.state}; tokens ${JSON.stringify(status.tokenUsage)}; metrics ${JSON.stringify(status.metrics)}; files ${JSON.stringify(status.modifiedFiles)}`,
    ),
  )

  console.log(live ? 'Talking to Anthropic (ANTHROPIC_API_KEY is set).' : 'No ANTHROPIC_API_KEY: each session gets a scripted model on 127.0.0.1.')
  const models = []
  const runs = await Promise.all(
    TASKS.map(async (task) => {
      const dir = path.join(root, task.label)
      fs.mkdirSync(dir)
      fs.writeFileSync(path.join(dir, 'README.md'), '# Demo project\n')
      fs.writeFileSync(path.join(dir, 'test.sh'), 'echo "3 of 3 tests pass"\n')
      const env = { CLAUDE_CONFIG_DIR: path.join(root, `${task.label}-config`), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }
      if (!live) {
        const model = await ScriptedModel.start(task.script(dir))
        models.push(model)
        Object.assign(env, model.env(env.CLAUDE_CONFIG_DIR))
      }
      const session = await spawner.spawnSession(config(task, dir, env))
      labels.set(session.sessionId, task.label)
      say(session.sessionId, `spawned ${session.sessionId}, pid ${session.status.pid}, conversation ${session.status.claudeSessionId}`)
      return session.completion
    }),
  )
  await Promise.all(runs)
  for (const model of models) await model.stop()

  const summary = spawner.getMetricsSummary()
  console.log(`\n${summary.completedSessions} of ${summary.totalSessions} sessions completed, ${summary.totalTokensUsed} tokens in all.`)
  const written = path.join(root, 'survey', 'SUMMARY.md')
  if (fs.existsSync(written)) console.log(`Claude Code wrote ${written}:\n${fs.readFileSync(written, 'utf8')}`)
  fs.rmSync(root, { recursive: true, force: true })
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
