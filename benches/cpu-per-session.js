'use strict'
// CPU time per sequential `exit:0` session, in all of this process's threads and in
// each thread by name (JavaScript's is `node`; the native ones are named), from
// /proc in clock ticks, so meaningful over thousands of sessions only.
//
//   node benches/cpu-per-session.js [sessions]
//
// (CLAUDE_SESSION_SPAWNER_PACKAGE=<checkout> measures another build.) Prints one JSON
// line: the rate, µs of CPU per session (user, system, and the agents'), and µs per
// session by thread name. Separate runs on a noisy machine differ by more than builds
// do: compare builds run back to back, more than once.
const fs = require('node:fs')
const { AGENT, workDir, config, spawnerPackage } = require('./common')

/** User plus system time of a `/proc` stat line, in ms (clock ticks of 10 ms). */
const fields = (raw) => raw.slice(raw.lastIndexOf(')') + 2).split(' ')
const TICK_MS = 10

function threads() {
  const cpu = {}
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const raw = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const name = raw.slice(raw.indexOf('(') + 1, raw.lastIndexOf(')'))
      const f = fields(raw)
      cpu[name] = (cpu[name] ?? 0) + (Number(f[11]) + Number(f[12])) * TICK_MS
    } catch {
      // A thread that ended meanwhile.
    }
  }
  return cpu
}

function process_() {
  const f = fields(fs.readFileSync('/proc/self/stat', 'utf8'))
  return { user: Number(f[11]) * TICK_MS, sys: Number(f[12]) * TICK_MS, agents: (Number(f[13]) + Number(f[14])) * TICK_MS }
}

async function main() {
  const count = Number(process.argv[2] ?? 4000)
  const ClaudeSessionSpawner = spawnerPackage().default
  const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['exit:0'], historySize: 10 })
  const dir = workDir('cpu')
  const cfg = config(dir)
  const run = async () => {
    const session = await spawner.spawnSession(cfg)
    await session.completion
    spawner.cleanupCompletedSessions()
  }
  for (let i = 0; i < 50; i++) await run()
  const [threadsBefore, before, started] = [threads(), process_(), process.hrtime.bigint()]
  for (let i = 0; i < count; i++) await run()
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const [threadsAfter, after] = [threads(), process_()]
  fs.rmSync(dir, { recursive: true, force: true })
  const perSession = (ms) => Math.round((ms * 1000) / count)
  const byThread = {}
  for (const [name, ms] of Object.entries(threadsAfter)) {
    const us = perSession(ms - (threadsBefore[name] ?? 0))
    if (us > 0) byThread[name] = us
  }
  console.log(
    JSON.stringify({
      rate: Math.round(count / seconds),
      cpuUs: perSession(after.user + after.sys - before.user - before.sys),
      userUs: perSession(after.user - before.user),
      sysUs: perSession(after.sys - before.sys),
      agentsUs: perSession(after.agents - before.agents),
      byThread,
    }),
  )
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
