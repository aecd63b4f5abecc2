// When a daemon dies (SIGKILL: no exit hook runs), its agents die with it (their
// parent-death signal), and the next daemon finds its sessions' state files and stops
// what is left of them.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import ClaudeSessionSpawner from 'claude-session-spawner'

import { FAKE_AGENT, alive, fakeSpawner, groupMembers, makeConfig, nextEvent, pidsAfter, tempDir, until, within } from './support'

const LIB = path.join(__dirname, '..', 'lib', 'index.js')

/** Bytes per line in a spawner's file of slots (src/registry.rs). */
const SLOT = 1024

/** The sessions recorded in a state directory: each spawner's file of slots, one line each. */
function recorded(stateDir: string): Array<Record<string, unknown>> {
  const entries = []
  for (const name of fs.readdirSync(stateDir).filter((n) => n.endsWith('.live'))) {
    const bytes = fs.readFileSync(path.join(stateDir, name))
    for (let at = 0; at < bytes.length; at += SLOT) {
      const line = bytes.subarray(at, at + SLOT).toString('utf8').trim()
      if (line !== '') entries.push(JSON.parse(line))
    }
  }
  return entries
}

const SLOTS_FILE = /^daemon-\d+-\d+-\d+\.live$/

/** A daemon process running `sessions` agents that each start two background sleepers. */
function daemon(stateDir: string, dir: string, sessions: number) {
  const script = path.join(dir, 'daemon.js')
  fs.writeFileSync(
    script,
    `const ClaudeSessionSpawner = require(${JSON.stringify(LIB)}).default
const spawner = new ClaudeSessionSpawner({ claudePath: ${JSON.stringify(FAKE_AGENT)}, protocol: 'text', extraArgs: ['spawn-sleepers:2', 'out:ready', 'hang'], stateDir: ${JSON.stringify(stateDir)} })
const config = {
  workingDirectory: ${JSON.stringify(dir)},
  charter: { identity: { name: 'n', email: 'e', role: 'r' }, objectives: [], constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] }, resources: { maxTokens: 0, maxExecutionTime: 0, allowedTools: [] } },
  taskContext: { taskId: 't', description: 'd', priority: 'low' },
  memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
}
let ready = 0
spawner.on('session-output', ({ sessionId, data }) => {
  for (const line of data.split('\\n')) if (line.startsWith('sleeper: ')) console.log(line)
  if (data.includes('ready') && ++ready === ${sessions}) {
    console.log('sessions: ' + JSON.stringify(spawner.getActiveSessions().map((s) => [s.sessionId, s.pid])))
  }
})
for (let i = 0; i < ${sessions}; i++) spawner.spawnSession(config)
`,
  )
  return spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
}

describe('a daemon that died', () => {
  it('leaves state files that the next daemon uses to stop every process of its sessions', async () => {
    const dir = tempDir()
    const stateDir = path.join(tempDir(), 'state')
    const child = daemon(stateDir, dir, 3)
    let out = ''
    child.stdout!.on('data', (d) => (out += d))
    const exited = new Promise((resolve) => child.on('exit', resolve))
    await until('the daemon to run its sessions', () => out.includes('sessions: '))
    const sessions: Array<[string, number]> = JSON.parse(out.split('sessions: ')[1].split('\n')[0])
    const sleepers = pidsAfter('sleeper: ', out)
    expect(sessions).toHaveLength(3)
    expect(sleepers).toHaveLength(6)
    expect(recorded(stateDir).map((e) => e.sessionId).sort()).toEqual(sessions.map(([id]) => id).sort())
    // One file of slots for the daemon's spawner, not a file per session.
    expect(fs.readdirSync(stateDir)).toEqual([expect.stringMatching(SLOTS_FILE)])
    expect(fs.statSync(stateDir).mode & 0o777).toBe(0o700)

    child.kill('SIGKILL')
    await within(exited, 'the daemon to die')
    // The agents die with their daemon (parent-death signal); what they started does
    // not get that signal and outlives it.
    for (const [, pid] of sessions) await until(`agent ${pid} to die with its daemon`, () => !alive(pid), 5000)
    for (const pid of sleepers) expect(alive(pid)).toBe(true)

    const next = new ClaudeSessionSpawner({ stateDir, gracePeriodMs: 500 })
    const report = await within(next.reapOrphans(), 'reapOrphans')
    expect(report.stateDir).toBe(stateDir)
    expect(report.orphans.map((o) => o.sessionId).sort()).toEqual(sessions.map(([id]) => id).sort())
    for (const orphan of report.orphans) {
      expect(orphan).toMatchObject({ wasRunning: false, leftovers: 2, daemonPid: child.pid, workingDirectory: dir })
    }
    for (const [, pid] of sessions) {
      await until(`group ${pid} to be gone`, () => !alive(pid) && groupMembers(pid).length === 0, 5000)
    }
    for (const pid of sleepers) await until(`sleeper ${pid} to be gone`, () => !alive(pid), 5000)
    expect(fs.readdirSync(stateDir)).toEqual([])
    for (const [id, pid] of sessions) {
      const status = next.getSessionStatus(id)!
      expect(status).toMatchObject({ state: 'crashed', pid })
      expect(status.errorMessage).toBe(
        `orphaned: its daemon (pid ${child.pid}) died while it ran; its agent had already exited; 2 processes it started were stopped by reapOrphans`,
      )
    }
    // A second sweep finds nothing.
    expect((await next.reapOrphans()).orphans).toEqual([])
  })

  it("leaves a live daemon's sessions alone, and blanks each session's line when it ends", async () => {
    const stateDir = path.join(tempDir(), 'state')
    const spawner = fakeSpawner(['hang'], { stateDir })
    const { sessionId } = await spawner.spawnSession(makeConfig(tempDir()))
    // Written by the session's supervisor, off the spawning thread.
    await until('the session to be recorded', () => fs.existsSync(stateDir) && recorded(stateDir).length === 1)
    const [file] = fs.readdirSync(stateDir)
    expect(file).toMatch(SLOTS_FILE)
    expect(recorded(stateDir)[0]).toMatchObject({ sessionId, daemonPid: process.pid, pid: spawner.getSessionStatus(sessionId)!.pid })
    expect(fs.statSync(path.join(stateDir, file)).mode & 0o777).toBe(0o600)

    const other = new ClaudeSessionSpawner({ stateDir, reapOrphans: true })
    const report = await nextEvent<any>(other, 'orphans-reaped')
    expect(report).toMatchObject({ orphans: [], ownedByLiveDaemons: 1, invalid: 0 })
    expect(spawner.getSessionStatus(sessionId)!.state).toBe('running')

    await spawner.terminateSession(sessionId)
    expect(recorded(stateDir)).toEqual([])
  })

  it('can be turned off, and refuses a bad stateDir', () => {
    expect(() => new ClaudeSessionSpawner({ stateDir: '' })).toThrow(expect.objectContaining({ field: 'options.stateDir' }))
    expect(() => new ClaudeSessionSpawner({ stateDir: 3 as unknown as string })).toThrow(TypeError)
    expect(() => new ClaudeSessionSpawner({ reapOrphans: 'yes' as unknown as boolean })).toThrow(expect.objectContaining({ field: 'options.reapOrphans' }))
    return expect(new ClaudeSessionSpawner({ stateDir: false }).reapOrphans()).resolves.toMatchObject({ orphans: [], ownedByLiveDaemons: 0 })
  })
})
