// Faults around the host: a worker thread that runs sessions is terminated, and a
// Rust panic inside the core. Each runs in a Node process of its own, so a crash or
// an abort shows as that process's exit, not as Jest's.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { FAKE_AGENT, alive, tempDir, until, within } from './support'

const LIB = path.join(__dirname, '..', 'lib', 'index.js')

const CONFIG = `{
  workingDirectory: DIR,
  charter: { identity: { name: 'n', email: 'e', role: 'r' }, objectives: [], constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] }, resources: { maxTokens: 0, maxExecutionTime: 0, allowedTools: [] } },
  taskContext: { taskId: 't', description: 'd', priority: 'low' },
  memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
}`

interface Host {
  /** Lines the host printed so far. */
  lines: string[]
  stderr: () => string
  /** Closes the host's stdin, which the scripts here take as their cue to exit. */
  release: () => void
  kill: () => void
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

function startHost(script: string, env: NodeJS.ProcessEnv = {}): Host {
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  const lines: string[] = []
  let partial = ''
  let stderr = ''
  child.stdout!.on('data', (d) => {
    const parts = (partial + d).split('\n')
    partial = parts.pop()!
    lines.push(...parts)
  })
  child.stderr!.on('data', (d) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal }))
  })
  return { lines, stderr: () => stderr, release: () => child.stdin!.end(), kill: () => child.kill('SIGKILL'), exited }
}

function lineAfter(host: Host, prefix: string): string | undefined {
  return host.lines.find((l) => l.startsWith(prefix))?.slice(prefix.length)
}

/** After a failed check: what the test started must not outlive it. */
function stopSession(pgid: number, others: number[]) {
  // While the leader is unreaped its id is still the group's; a reaped one's, or a
  // dead process's, may belong to someone else by now.
  if (!reaped(pgid)) process.kill(-pgid, 'SIGKILL')
  for (const pid of others) if (alive(pid)) process.kill(pid, 'SIGKILL')
}

/** Whether `pid` has been reaped: a zombie still has its /proc entry. */
function reaped(pid: number): boolean {
  return !fs.existsSync(`/proc/${pid}`)
}

/**
 * A host whose worker thread runs a session of an agent with two background
 * sleepers. Once they run, the host prints their pids, terminates the worker, and
 * prints `terminated: <code>` when `worker.terminate()` has resolved. Then it waits
 * for its stdin to close, so the test looks at the processes while the host still
 * lives: the host's own exit must not be what stops them.
 */
function workerHost(loadOnMainThread: boolean): Host {
  const dir = tempDir()
  const worker = path.join(dir, 'worker.js')
  fs.writeFileSync(
    worker,
    `const { parentPort } = require('node:worker_threads')
const ClaudeSessionSpawner = require(${JSON.stringify(LIB)}).default
const DIR = ${JSON.stringify(dir)}
const spawner = new ClaudeSessionSpawner({ claudePath: ${JSON.stringify(FAKE_AGENT)}, protocol: 'text', extraArgs: ['spawn-sleepers:2', 'out:ready', 'hang'] })
let out = ''
spawner.on('session-output', ({ data }) => {
  out += data
  if (out.includes('ready\\n')) {
    const sleepers = out.split('\\n').filter((l) => l.startsWith('sleeper: ')).map((l) => Number(l.slice(9)))
    parentPort.postMessage({ pid: spawner.getActiveSessions()[0].pid, sleepers })
    out = ''
  }
})
spawner.spawnSession(${CONFIG})
`,
  )
  const host = path.join(dir, 'host.js')
  fs.writeFileSync(
    host,
    `const { Worker } = require('node:worker_threads')
${loadOnMainThread ? `require(${JSON.stringify(LIB)})` : ''}
const worker = new Worker(${JSON.stringify(worker)})
worker.on('error', (error) => console.log('worker error: ' + error))
worker.once('message', async (session) => {
  console.log('session: ' + JSON.stringify(session))
  console.log('terminated: ' + (await worker.terminate()))
})
process.stdin.resume()
process.stdin.on('end', () => console.log('released'))
`,
  )
  return startHost(host)
}

/** Runs a worker host up to `worker.terminate()`; returns it with the session's pids. */
async function terminatedWorker(loadOnMainThread: boolean) {
  const host = workerHost(loadOnMainThread)
  try {
    await until('the worker to terminate', () => lineAfter(host, 'terminated: ') !== undefined || host.stderr() !== '')
    if (lineAfter(host, 'terminated: ') === undefined) throw new Error(`the host failed:\n${host.stderr()}`)
    const { pid, sleepers }: { pid: number; sleepers: number[] } = JSON.parse(lineAfter(host, 'session: ')!)
    return { host, pid, sleepers }
  } catch (error) {
    const session = lineAfter(host, 'session: ')
    if (session) stopSession(JSON.parse(session).pid, JSON.parse(session).sleepers)
    host.kill()
    await host.exited
    throw error
  }
}

async function released(host: Host) {
  host.release()
  const exit = await within(host.exited, 'the host to exit')
  expect(host.lines).not.toContainEqual(expect.stringMatching(/^worker error/))
  expect(host.stderr()).toBe('')
  expect(exit).toEqual({ code: 0, signal: null })
  expect(host.lines[host.lines.length - 1]).toBe('released')
}

describe('a worker thread running sessions', () => {
  for (const alsoOnMain of [false, true]) {
    it(`terminated with the addon loaded ${alsoOnMain ? 'on the main thread too' : 'only there'}: the host survives, the session processes are killed, the agent reaped`, async () => {
      const { host, pid, sleepers } = await terminatedWorker(alsoOnMain)
      try {
        expect(sleepers).toHaveLength(2)
        // 1: terminate() stopped the thread, it did not end on its own.
        expect(lineAfter(host, 'terminated: ')).toBe('1')
        // Killed by the spawner's environment cleanup hook; the supervising runtime is
        // the process's, not the environment's, so it lives on to reap the agent even
        // when the worker was the addon's last environment.
        await until('the agent to be reaped', () => reaped(pid), 5000)
        await until('the sleepers to be gone', () => sleepers.every((p) => !alive(p)), 5000)
      } catch (error) {
        stopSession(pid, sleepers)
        throw error
      } finally {
        await released(host)
      }
    })
  }
})

describe('a Rust panic inside the core', () => {
  it('rejects spawnSession with an Error, records the session failed, and the host exits by itself', async () => {
    const dir = tempDir()
    const script = path.join(dir, 'panic.js')
    fs.writeFileSync(
      script,
      `const ClaudeSessionSpawner = require(${JSON.stringify(LIB)}).default
const DIR = ${JSON.stringify(dir)}
const spawner = new ClaudeSessionSpawner({ claudePath: ${JSON.stringify(FAKE_AGENT)}, protocol: 'text', extraArgs: ['exit:0'] })
spawner.spawnSession(${CONFIG}).then(
  () => console.log('spawned'),
  (error) => {
    const status = error.sessionId ? spawner.getSessionStatus(error.sessionId) : null
    console.log(JSON.stringify({
      isError: error instanceof Error,
      message: error.message,
      code: error.code,
      state: status && status.state,
      pid: status && status.pid,
      errorMessage: status && status.errorMessage,
    }))
  },
)
`,
    )
    // stdin is closed at once: nothing but the spawner could keep this host alive.
    const host = startHost(script, { CLAUDE_SESSION_SPAWNER_TEST_PANIC: 'launch' })
    host.release()
    const exit = await within(host.exited, 'the host to exit by itself')
    expect(exit).toEqual({ code: 0, signal: null })
    expect(host.lines).toHaveLength(1)
    const outcome = JSON.parse(host.lines[0])
    expect(outcome).toEqual({
      isError: true,
      message: expect.stringContaining('internal error (panic) while starting the agent'),
      code: 'ERR_SPAWN_FAILED',
      state: 'failed',
      pid: undefined,
      errorMessage: outcome.message,
    })
    // The panic did happen (Rust's hook reports it) and was caught, not an abort.
    expect(host.stderr()).toContain('panicking in launch() on purpose')
  })
})
