'use strict'
// Shared by the benchmark scripts: paths, a config, and a child_process spawner that
// does what the TypeScript spawner did (session directory, CLAUDE.md, agent started
// with child_process.spawn, prompt on stdin, output kept as strings).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const AGENT = path.join(ROOT, 'target', 'release', 'examples', 'fake_agent')

/** tmpfs when there is one: the figures then measure the spawner, not the disk. */
/** A fresh working directory: in memory (/dev/shm) unless `onDisk`, or under $BENCH_DIR. */
function workDir(name, onDisk = false) {
  const base = process.env.BENCH_DIR || (!onDisk && fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir())
  const dir = fs.mkdtempSync(path.join(base, `css-bench-${name}-`))
  return dir
}

function config(workingDirectory) {
  return {
    workingDirectory,
    charter: {
      identity: { name: 'Bench VP', email: 'bench@example.com', role: 'Engineer' },
      objectives: ['Measure'],
      constraints: { forbiddenCommands: ['rm -rf'], forbiddenPatterns: [/secret/i], requiredApprovals: ['deploy'] },
      resources: { maxTokens: 1000, maxExecutionTime: 60000, allowedTools: ['read', 'bash'] },
    },
    taskContext: { taskId: 'B-1', description: 'benchmark task', priority: 'medium' },
    memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
  }
}

/** The TypeScript module's metric expressions, tested on every stdout chunk. */
const METRICS = [/executed command/i, /modified file|wrote file|edited file/i, /\[Y\/n\]|\(approve\)/i, /escalated|escalating/i, /error|failed|exception/i]

let counter = 0
/**
 * One session the way the TypeScript module ran it. Resolves when the agent has
 * closed. With `onData`, each stdout chunk goes only to it (a bare listener);
 * without, each chunk is appended to the status string, tested against the metric
 * expressions and emitted as `session-output` to `emitter`, as the module did.
 */
function childProcessSession(dir, args, onData, emitter) {
  const sessionDir = path.join(dir, '.vp-daemon', 'sessions', `claude-session-${process.pid}-${counter++}`)
  fs.mkdirSync(sessionDir, { recursive: true })
  fs.writeFileSync(path.join(sessionDir, 'CLAUDE.md'), '# Claude Session\n\n## VP Identity\n\n- Bench VP\n'.repeat(20))
  return new Promise((resolve, reject) => {
    const child = spawn(AGENT, args, {
      cwd: dir,
      env: { ...process.env, CI: 'true', CLAUDE_NON_INTERACTIVE: 'true' },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    const metrics = [0, 0, 0, 0, 0]
    child.stdout.on(
      'data',
      onData ??
        ((d) => {
          stdout += d
          METRICS.forEach((re, i) => re.test(d) && metrics[i]++)
          emitter?.emit('session-output', { sessionId: 'ts', type: 'stdout', data: d })
        }),
    )
    child.stderr.on('data', (d) => (stderr += d))
    child.stdin.on('error', () => {})
    child.stdin.write('Task: benchmark task\n\nProceed.\n')
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/**
 * Writes every dirty page out (`sync`) before a throughput run, so that no run pays
 * for the writeback of the log the run before it wrote (256 MiB of it, for a native run).
 */
function flushDisk() {
  execFileSync('sync')
}

function rssMiB() {
  return process.memoryUsage().rss / 1048576
}

function peakRssMiB() {
  return process.resourceUsage().maxRSS / 1024
}

/**
 * The package under test: this checkout, or the one `CLAUDE_SESSION_SPAWNER_PACKAGE`
 * names (`benches/ab.js` runs another build with this tree's scripts and agent).
 */
function spawnerPackage() {
  return require(process.env.CLAUDE_SESSION_SPAWNER_PACKAGE || ROOT)
}

module.exports = { flushDisk, ROOT, AGENT, workDir, config, childProcessSession, rssMiB, peakRssMiB, spawnerPackage }
