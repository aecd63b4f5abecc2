// Scale: hundreds of concurrent sessions from one Node process, as the daemon runs
// them. Timings are the benchmark's business (benches/scale.js); this checks that
// every session starts, runs, stops when told and leaves nothing behind.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { type ClaudeSessionStatus } from 'claude-session-spawner'

import { fakeSpawner, makeConfig, openDescriptors, processTable, tempDir, until, within } from './support'

const SESSIONS = 500

/**
 * Descriptors the spawner holds per running session: the agent's three pipes, the
 * two output logs and a pidfd; spawning briefly needs a few more for the child's ends.
 */
const DESCRIPTORS_PER_SESSION = 8

function openFilesSoftLimit(): number {
  const line = fs
    .readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'))
  const soft = line?.split(/\s{2,}/)[1]
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft)
}

describe(`${SESSIONS} concurrent sessions from one process`, () => {
  it('all run at once, all end terminated on terminateSession, and no process or descriptor of them remains', async () => {
    // Node raises its soft limit to the hard one at startup; if even that is too low,
    // say so instead of failing on EMFILE halfway through.
    const needed = openDescriptors() + SESSIONS * DESCRIPTORS_PER_SESSION
    const limit = openFilesSoftLimit()
    if (limit < needed) {
      throw new Error(`${SESSIONS} sessions need about ${needed} open files, the limit is ${limit}: raise \`ulimit -Hn\``)
    }

    const dir = tempDir()
    // The default history (100) would forget most of the ended sessions checked below.
    const spawner = fakeSpawner(['hang'], { stateDir: path.join(tempDir(), 'state'), historySize: SESSIONS })
    const ended = new Map<string, ClaudeSessionStatus[]>()
    spawner.on('session-ended', ({ sessionId, status }) => {
      ended.set(sessionId, [...(ended.get(sessionId) ?? []), status])
    })
    const descriptorsBefore = openDescriptors()

    const started = await within(
      Promise.all(Array.from({ length: SESSIONS }, () => spawner.spawnSession(makeConfig(dir)))),
      `${SESSIONS} spawns`,
    )
    const ids = started.map((s) => s.sessionId)
    const pids = started.map((s) => s.status.pid!)
    expect(new Set(ids).size).toBe(SESSIONS)
    expect(new Set(pids).size).toBe(SESSIONS)
    expect(started.filter((s) => s.status.state !== 'running' || !(s.status.pid! > 0))).toEqual([])

    const active = spawner.getActiveSessions()
    expect(active.map((s) => s.sessionId)).toEqual(ids)
    expect(active.map((s) => s.pid)).toEqual(pids)
    expect(active.filter((s) => s.state !== 'running')).toEqual([])
    // Each agent runs, as leader of its own process group (what terminating it relies on).
    const running = processTable()
    expect(pids.filter((pid) => running.get(pid) !== pid)).toEqual([])
    expect(ended.size).toBe(0)

    await within(Promise.all(ids.map((id) => spawner.terminateSession(id))), `terminating ${SESSIONS} sessions`)

    expect(ids.filter((id) => ended.get(id)?.length !== 1)).toEqual([])
    expect(ids.filter((id) => ended.get(id)![0].state !== 'terminated')).toEqual([])
    expect((await Promise.all(started.map((s) => s.completion))).filter((s) => s.state !== 'terminated')).toEqual([])
    expect(spawner.getActiveSessions().filter((s) => s.state !== 'terminated')).toEqual([])
    // Linux hands out pids cyclically, so none of these is reused within the test.
    const groups = new Set(pids)
    const leftovers = () => [...processTable()].filter(([pid, pgid]) => groups.has(pid) || groups.has(pgid))
    await until('every process of the sessions to be gone', () => leftovers().length === 0)
    // The spawner keeps one descriptor of its own from its first session on: the file
    // in its state directory where each live session has a line.
    await until("the sessions' descriptors to be closed", () => openDescriptors() <= descriptorsBefore + 1)
    expect(spawner.cleanupCompletedSessions()).toBe(SESSIONS)
  })
})
