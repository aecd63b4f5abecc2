'use strict'
// Many concurrent sessions from one Node process: how long until all run, what they
// cost in RSS, and how long until all have ended after being told to stop.
// node --expose-gc benches/scale.js <native|child_process> <sessions>
const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { AGENT, workDir, config, rssMiB, peakRssMiB, spawnerPackage } = require('./common')

/** Sessions started and stopped before measuring, so first-use costs are not counted. */
const WARMUP = 5
const PROMPT = 'Task: benchmark task\n\nProceed.\n'

const ms = (since) => Number(process.hrtime.bigint() - since) / 1e6

/**
 * The package's spawner: `start()` resolves once all run, `stop()` once all have
 * ended; `check()` (not timed) confirms all ran at once.
 */
function nativeVariant(dir) {
  const ClaudeSessionSpawner = spawnerPackage().default
  const spawner = new ClaudeSessionSpawner({
    claudePath: AGENT,
    protocol: 'text',
    extraArgs: ['hang'],
    historySize: 10,
    // On the same tmpfs as the working directory, not wherever HOME is.
    stateDir: path.join(dir, 'state'),
  })
  const cfg = config(dir)
  let ids = []
  let ended = []
  let allEnded
  spawner.on('session-ended', ({ status }) => {
    ended.push(status.state)
    if (ended.length === ids.length) allEnded()
  })
  return {
    async start(count) {
      ended = []
      ids = (await Promise.all(Array.from({ length: count }, () => spawner.spawnSession(cfg)))).map((s) => s.sessionId)
    },
    check() {
      const running = spawner.getActiveSessions().filter((s) => s.state === 'running').length
      if (running !== ids.length || ended.length) throw new Error(`${running} of ${ids.length} sessions running, ${ended.length} ended`)
    },
    async stop() {
      const done = new Promise((resolve) => (allEnded = resolve))
      await Promise.all(ids.map((id) => spawner.terminateSession(id)))
      await done
      const wrong = ended.filter((state) => state !== 'terminated')
      if (wrong.length) throw new Error(`${wrong.length} sessions ended ${[...new Set(wrong)]}`)
      // Ended sessions beyond historySize have left the active set already; this drops the rest.
      spawner.cleanupCompletedSessions()
    },
  }
}

/**
 * The same with child_process as a daemon would use it: piped stdio with the output
 * read, the prompt written, each child leading its own process group so the group
 * can be signalled.
 */
function childProcessVariant(dir) {
  let children = []
  return {
    async start(count) {
      const env = { ...process.env, CI: 'true', CLAUDE_NON_INTERACTIVE: 'true' }
      const spawned = []
      children = []
      for (let i = 0; i < count; i++) {
        const child = spawn(AGENT, ['hang'], { cwd: dir, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
        const output = { stdout: '', stderr: '' }
        child.stdout.setEncoding('utf8').on('data', (d) => (output.stdout += d))
        child.stderr.setEncoding('utf8').on('data', (d) => (output.stderr += d))
        child.stdin.on('error', () => {})
        child.stdin.write(PROMPT)
        child.closed = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
        spawned.push(new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject)))
        children.push(child)
      }
      await Promise.all(spawned)
    },
    check() {
      const gone = children.filter((c) => c.exitCode !== null || c.signalCode !== null).length
      if (gone) throw new Error(`${gone} of ${children.length} children already ended`)
    },
    async stop() {
      for (const child of children) process.kill(-child.pid, 'SIGTERM')
      const ends = await Promise.all(children.map((c) => c.closed))
      const wrong = ends.filter((e) => e.signal !== 'SIGTERM')
      if (wrong.length) throw new Error(`${wrong.length} children did not end by SIGTERM`)
    },
  }
}

async function main() {
  const [variant, countText] = process.argv.slice(2)
  const count = Number(countText)
  const dir = workDir('scale')
  const make = { native: nativeVariant, child_process: childProcessVariant }[variant]
  if (!make) throw new Error(`unknown variant ${variant}`)
  const sessions = make(dir)
  await sessions.start(WARMUP)
  sessions.check()
  await sessions.stop()

  global.gc?.()
  const rssBefore = rssMiB()
  const started = process.hrtime.bigint()
  await sessions.start(count)
  const runningMs = ms(started)
  const rssRunning = rssMiB()
  sessions.check()
  const stopping = process.hrtime.bigint()
  await sessions.stop()
  const terminateMs = ms(stopping)
  const peakGrowth = peakRssMiB() - rssBefore
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(
    JSON.stringify({
      variant,
      sessions: count,
      warmup: WARMUP,
      runningMs,
      terminateMs,
      rssBeforeMiB: rssBefore,
      rssGrowthMiB: rssRunning - rssBefore,
      peakGrowthMiB: peakGrowth,
    }),
  )
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
