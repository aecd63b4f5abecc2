'use strict'
// Where each build's sequential session goes, from a kernel trace of one tagged
// `interleaved.js` run (each build runs its own copy of the fake agent, so the agent's
// name tells whose session it is). Needs `perf` and the right to trace (root here):
//
//   INTERLEAVED_TAG=1 perf record -e sched:sched_process_fork,sched:sched_process_exec \
//     -e sched:sched_process_exit,syscalls:sys_enter_statx,syscalls:sys_enter_clone \
//     -o /tmp/builds.data -- node benches/interleaved.js 1500 . <other checkout>
//   perf script -F comm,tid,time,event,trace -i /tmp/builds.data | node benches/trace-builds.js
//
// Prints one JSON line: per build (`a` is the first checkout named), medians over its
// sessions (µs) of the four phases that make up a session's cycle, each measured
// between consecutive sessions of the same build:
//   - exitToPrepare: from the agent's exit until the thread that starts the next
//     session checks its working directory (the end's way to JavaScript, JavaScript's
//     work, the next start's way to that thread);
//   - prepare: from there to the `clone` (session directory, CLAUDE.md, streams);
//   - cloneToExec: from the `clone` to the agent's `exec` (the child's work, `execve`);
//   - agentRun: from the `exec` to the agent's exit.
const lines = require('node:fs').readFileSync(0, 'utf8').split('\n')

const byPid = new Map()
const order = []
let lastExited = null
for (const text of lines) {
  const m = text.match(/^\s*\S.*?\s+(\d+)\s+(\d+\.\d+):\s+(\S+):\s*(.*)$/)
  if (!m) continue
  const [tid, t, event, rest] = [Number(m[1]), Number(m[2]) * 1e6, m[3], m[4]]
  const field = (name) => rest.match(new RegExp(`(?:^|\\s)${name}=(\\S+)`))?.[1]
  switch (event) {
    case 'sched:sched_process_fork': {
      const session = { fork: t }
      byPid.set(Number(field('child_pid')), session)
      order.push(session)
      // The session after `lastExited`, when the thread that cloned it prepared it.
      const prepared = lastExited?.statx.get(tid)
      if (prepared !== undefined && lastExited.clone.has(tid)) {
        Object.assign(lastExited, { next: session, prepare: prepared, cloned: lastExited.clone.get(tid) })
      }
      lastExited = null
      break
    }
    case 'sched:sched_process_exec': {
      const session = byPid.get(tid)
      const tag = field('filename')?.match(/fake_agent_([a-z])$/)?.[1]
      if (session && tag) Object.assign(session, { exec: t, build: tag })
      break
    }
    case 'sched:sched_process_exit': {
      const session = byPid.get(Number(field('pid')))
      if (session?.build && session.exit === undefined) {
        // Each thread's first working-directory check and clone after this exit.
        Object.assign(session, { exit: t, statx: new Map(), clone: new Map() })
        lastExited = session
      }
      break
    }
    case 'syscalls:sys_enter_statx':
      if (lastExited && !lastExited.statx.has(tid)) lastExited.statx.set(tid, t)
      break
    case 'syscalls:sys_enter_clone':
      if (lastExited?.statx.has(tid) && !lastExited.clone.has(tid)) lastExited.clone.set(tid, t)
      break
  }
}

const median = (xs) => (xs.length ? Math.round([...xs].sort((a, b) => a - b)[xs.length >> 1]) : null)
const builds = {}
for (const build of [...new Set(order.map((s) => s.build).filter(Boolean))].sort()) {
  const pairs = order.filter((s) => s.build === build && s.next?.build === build && s.next.exec)
  builds[build] = {
    pairs: pairs.length,
    exitToPrepare: median(pairs.map((s) => s.prepare - s.exit)),
    prepare: median(pairs.map((s) => s.cloned - s.prepare)),
    cloneToExec: median(pairs.map((s) => s.next.exec - s.cloned)),
    agentRun: median(order.filter((s) => s.build === build && s.exec && s.exit).map((s) => s.exit - s.exec)),
  }
}
console.log(JSON.stringify(builds))
