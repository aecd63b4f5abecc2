'use strict'
// What this package adds to a real Claude Code session's start: the time from
// starting a session to the scripted model server receiving the CLI's first
// `POST /v1/messages`, through ClaudeSessionSpawner (stream-json, the default) or
// with the CLI launched directly by child_process.spawn with the same arguments,
// environment and first input.
// node benches/claude-overhead.js <native|direct>
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { performance } = require('node:perf_hooks')
const { ROOT, config, spawnerPackage } = require('./common')
const { ScriptedModel } = require('../test-support/model-server.js')

const CLAUDE = path.join(ROOT, 'node_modules', '.bin', 'claude')

const dirs = []
function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'css-bench-claude-'))
  dirs.push(dir)
  return dir
}

/**
 * As `__test__/claude.ts` sets a session up: a fresh working directory, config
 * directory and HOME (Claude Code's first run in a config directory is part of
 * both variants alike), the tools the end-to-end tests allow, no forbidden commands
 * (so neither variant passes --disallowedTools).
 */
function sessionConfig(model) {
  const cfg = config(tempDir())
  cfg.environmentVariables = { ...model.env(tempDir()), HOME: tempDir() }
  cfg.charter.resources.allowedTools = ['bash', 'read', 'write', 'edit']
  cfg.charter.constraints = { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] }
  return cfg
}

async function viaSpawner(cfg) {
  const ClaudeSessionSpawner = spawnerPackage().default
  const spawner = new ClaudeSessionSpawner({ claudePath: CLAUDE })
  const started = performance.now()
  const session = await spawner.spawnSession(cfg)
  const spawnedAt = performance.now()
  const status = await session.completion
  const endedAt = performance.now()
  if (status.state !== 'completed') throw new Error(`session ended ${status.state}: ${status.errorMessage}`)
  return { started, spawnedAt, endedAt }
}

/** The CLAUDE.md the spawner writes for `cfg` (same sections and text, for this config). */
function claudeMd(sessionId, cfg) {
  const list = (items) => (items.length ? items.map((i) => `- ${i}\n`).join('') : '- (none)\n') + '\n'
  const { charter: c, taskContext: t } = cfg
  return (
    `# Claude Session ${sessionId}\n\n**Task ID:** ${t.taskId}\n**Task:** ${t.description}\n**Priority:** ${t.priority}\n\n` +
    `## VP Identity\n\n- **Name:** ${c.identity.name}\n- **Email:** ${c.identity.email}\n- **Role:** ${c.identity.role}\n\n` +
    `## Objectives\n\n${list(c.objectives)}` +
    `## Constraints\n\n### Forbidden Commands\n\n${list(c.constraints.forbiddenCommands.map((x) => `\`${x}\``))}` +
    `### Required Approvals\n\n${list(c.constraints.requiredApprovals)}` +
    `## Resource Limits\n\n- **Max Tokens:** ${c.resources.maxTokens}\n- **Max Execution Time:** ${c.resources.maxExecutionTime}ms\n` +
    `- **Allowed Tools:** ${c.resources.allowedTools.join(', ')}\n\n` +
    `## Memory Context\n\n### Recent Actions\n\n${list([])}### Preferences\n\n${list([])}`
  )
}

/**
 * The CLI as `src/protocol/stream_json.rs` starts it, by hand: the same argument
 * vector, the variables the spawner adds, its own process group, the hook
 * registration and the task prompt on stdin, stdin closed after the `result`.
 * Everything but the spawn is prepared before the clock starts.
 */
async function direct(cfg) {
  const sessionId = `claude-session-${crypto.randomUUID()}`
  const md = claudeMd(sessionId, cfg)
  const sessionDir = path.join(cfg.workingDirectory, '.vp-daemon', 'sessions', sessionId)
  fs.mkdirSync(sessionDir, { recursive: true })
  fs.writeFileSync(path.join(sessionDir, 'CLAUDE.md'), md)
  // This config's tool words are all Claude Code names once capitalised.
  const tools = cfg.charter.resources.allowedTools.map((t) => t[0].toUpperCase() + t.slice(1))
  const args = [
    '-p',
    '--input-format', 'stream-json',
    '--output-format', 'stream-json',
    '--verbose',
    '--permission-prompt-tool', 'stdio',
    '--session-id', crypto.randomUUID(),
    '--append-system-prompt', md,
    '--tools', tools.join(','),
  ]
  const env = {
    ...process.env,
    CI: 'true',
    CLAUDE_NON_INTERACTIVE: 'true',
    CLAUDE_CONFIG_PATH: path.join(sessionDir, 'CLAUDE.md'),
    CLAUDE_SESSION_SPAWNER_SESSION_ID: sessionId,
    ...cfg.environmentVariables,
  }
  const prompt = `Task: ${cfg.taskContext.description}\n\nPlease proceed with this task, following your VP charter: its objectives, constraints and resource limits.`
  const firstInput =
    JSON.stringify({
      type: 'control_request',
      request_id: 'initialize',
      request: { subtype: 'initialize', hooks: { PreToolUse: [{ hookCallbackIds: ['charter'] }] } },
    }) +
    '\n' +
    JSON.stringify({ type: 'user', message: { role: 'user', content: prompt } }) +
    '\n'

  const started = performance.now()
  const child = spawn(CLAUDE, args, { cwd: cfg.workingDirectory, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
  child.stdin.on('error', () => {})
  child.stdin.write(firstInput)
  await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject))
  const spawnedAt = performance.now()
  let pending = ''
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
  child.stdout.setEncoding('utf8').on('data', (d) => {
    pending += d
    let at
    while ((at = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, at)
      pending = pending.slice(at + 1)
      if (line.startsWith('{') && JSON.parse(line).type === 'result') child.stdin.end()
    }
  })
  const code = await new Promise((resolve, reject) => child.on('error', reject).on('close', resolve))
  const endedAt = performance.now()
  if (code !== 0) throw new Error(`claude exited ${code}: ${stderr}`)
  return { started, spawnedAt, endedAt }
}

async function main() {
  const [variant] = process.argv.slice(2)
  const run = { native: viaSpawner, direct }[variant]
  if (!run) throw new Error(`unknown variant ${variant}`)
  const model = await ScriptedModel.start([{ text: 'OK' }])
  try {
    const cfg = sessionConfig(model)
    const firstContact = model.waitForRequest()
    const firstMessages = model.waitForRequest((r) => r.method === 'POST' && r.path === '/v1/messages')
    const { started, spawnedAt, endedAt } = await run(cfg)
    const contact = await firstContact
    const messages = await firstMessages
    console.log(
      JSON.stringify({
        variant,
        spawnedMs: spawnedAt - started,
        firstRequestMs: contact.receivedAt - started,
        firstRequest: `${contact.method} ${contact.path}`,
        firstMessagesMs: messages.receivedAt - started,
        endMs: endedAt - started,
        requests: model.requests.length,
      }),
    )
  } finally {
    await model.stop()
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
