// Helpers shared by the Jest suites: the fake agent, configs, event recording,
// deadlines that never leave a timer behind, and process-table checks.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { EventEmitter } from 'node:events'

import ClaudeSessionSpawner, {
  type ClaudeSessionConfig,
  type ClaudeSessionSpawnerOptions,
} from 'claude-session-spawner'

/** Built by `cargo build --example fake_agent` (part of `npm run build` and `cargo test`). */
export const FAKE_AGENT = path.join(__dirname, '..', 'target', 'debug', 'examples', 'fake_agent')
if (!fs.existsSync(FAKE_AGENT)) {
  throw new Error(`${FAKE_AGENT} is missing: run \`npm run build\` (or \`cargo build --example fake_agent\`)`)
}

export const DEADLINE_MS = 20_000

const tempDirs: string[] = []
const spawners: ClaudeSessionSpawner[] = []

export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'css-test-'))
  tempDirs.push(dir)
  return dir
}

/** A spawner whose sessions are stopped after each test, whatever happened. */
export function tracked(options: ClaudeSessionSpawnerOptions = {}): ClaudeSessionSpawner {
  const spawner = new ClaudeSessionSpawner(options)
  spawners.push(spawner)
  return spawner
}

/** A spawner running the fake agent with `steps` over the text protocol. */
export function fakeSpawner(steps: string[], options: ClaudeSessionSpawnerOptions = {}): ClaudeSessionSpawner {
  return tracked({ claudePath: FAKE_AGENT, protocol: 'text', extraArgs: steps, ...options })
}

export function makeConfig(workingDirectory: string, overrides: Partial<ClaudeSessionConfig> = {}): ClaudeSessionConfig {
  return {
    workingDirectory,
    charter: {
      identity: { name: 'Test VP', email: 'vp@example.com', role: 'Engineer' },
      objectives: ['Finish the task', 'Keep the build green'],
      constraints: {
        forbiddenCommands: ['rm -rf'],
        forbiddenPatterns: [/secret/i],
        requiredApprovals: ['deploy'],
      },
      resources: { maxTokens: 10_000, maxExecutionTime: 60_000, allowedTools: ['read', 'bash'] },
    },
    taskContext: { taskId: 'T-1', description: 'Run the fake task', priority: 'medium' },
    memory: {
      recentActions: [{ timestamp: new Date('2024-05-01T10:00:00.000Z'), action: 'ran tests', result: 'ok' }],
      conversationHistory: [],
      preferences: { style: 'terse' },
      projectContext: {},
    },
    ...overrides,
  }
}

/** Rejects after `ms` unless `promise` settles first; never leaves a timer running. */
export async function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** The first `event` whose payload satisfies `accept`, within the deadline. */
export function nextEvent<T>(emitter: EventEmitter, event: string, accept: (payload: T) => boolean = () => true): Promise<T> {
  let listener: ((payload: T) => void) | undefined
  const seen = new Promise<T>((resolve) => {
    listener = (payload: T) => {
      if (accept(payload)) resolve(payload)
    }
    emitter.on(event, listener)
  })
  return within(seen, event).finally(() => emitter.off(event, listener!))
}

export type Recorded = [name: string, payload: any]

/** Records every spawner event, in order. */
export function record(spawner: ClaudeSessionSpawner): Recorded[] {
  const seen: Recorded[] = []
  for (const name of ['session-spawned', 'session-output', 'session-timeout', 'session-ended']) {
    spawner.on(name, (payload: unknown) => seen.push([name, payload]))
  }
  return seen
}

export function outputOf(events: Recorded[], sessionId: string, type: 'stdout' | 'stderr' = 'stdout'): string {
  return events
    .filter(([name, p]) => name === 'session-output' && p.sessionId === sessionId && p.type === type)
    .map(([, p]) => p.data)
    .join('')
}

function stat(pid: number): string[] | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return text.slice(text.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** Whether `pid` runs. A zombie counts as gone: PID 1 here does not reap orphans. */
export function alive(pid: number): boolean {
  const fields = stat(pid)
  return fields !== null && fields[0] !== 'Z'
}

/** Live (non-zombie) processes in process group `pgid`. */
export function groupMembers(pgid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => {
      const fields = stat(pid)
      return fields !== null && fields[0] !== 'Z' && Number(fields[2]) === pgid
    })
}

/**
 * Every live (non-zombie) process as pid -> process group, from one pass over /proc:
 * checking hundreds of sessions with `alive` and `groupMembers` would read /proc
 * once per pid.
 */
export function processTable(): Map<number, number> {
  const table = new Map<number, number>()
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const fields = stat(Number(name))
    if (fields !== null && fields[0] !== 'Z') table.set(Number(name), Number(fields[2]))
  }
  return table
}

/** How many file descriptors this process has open. */
export function openDescriptors(): number {
  return fs.readdirSync('/proc/self/fd').length
}

export function pidsAfter(prefix: string, text: string): number[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(prefix))
    .map((line) => Number(line.slice(prefix.length)))
}

/** Polls `check` until it holds, within the deadline. */
export async function until(what: string, check: () => boolean, ms = DEADLINE_MS): Promise<void> {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise<void>((resolve) => setTimeout(resolve, 5))
  }
}

afterEach(async () => {
  // Whatever a test left running is stopped, so Jest exits on its own.
  for (const spawner of spawners.splice(0)) {
    for (const status of spawner.getActiveSessions()) {
      if (['initializing', 'running', 'waiting_input'].includes(status.state)) {
        await within(spawner.terminateSession(status.sessionId, false), 'cleanup')
      }
    }
  }
})

afterAll(() => {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

export interface NodeRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs the script `file` in a child Node with stdin closed and waits for it to exit by
 * itself; one still running after `ms` is killed (by its pid) and the run rejects.
 */
export function runNode(file: string, ms = 15_000): Promise<NodeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const deadline = setTimeout(() => {
      process.kill(child.pid!, 'SIGKILL')
      reject(new Error(`${file} did not exit within ${ms} ms; its output: ${stdout}${stderr}`))
    }, ms)
    child.on('error', (e) => {
      clearTimeout(deadline)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(deadline)
      resolve({ code, signal, stdout, stderr })
    })
  })
}
