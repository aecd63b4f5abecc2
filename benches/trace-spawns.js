'use strict'
// Where a sequential session's time goes, from the kernel's scheduler tracepoints
// (needs `perf` and the right to trace, as root on this machine):
//
//   perf record -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit \
//     -e sched:sched_wakeup,sched:sched_switch,syscalls:sys_enter_execve \
//     -o /tmp/spawns.data -- node benches/spawn-rate.js native 1500
//   perf script -F comm,tid,cpu,time,event,trace -i /tmp/spawns.data | node benches/trace-spawns.js
//
// (CLAUDE_SESSION_SPAWNER_PACKAGE=<checkout> traces another build.) Prints one JSON
// line of medians over the agents (µs): from the clone to the child's `execve` (what
// the child does before it), the `execve` itself, the agent's run, and from its exit
// to the next clone (the end's way to JavaScript, JavaScript, the next start's way to
// the clone). `parentWaitedForAgent` counts the agents whose spawning thread, woken
// when the child exec'd, did not run again until the agent had exited: the kernel
// queued it on the agent's CPU while the other was idle.
const lines = require('node:fs').readFileSync(0, 'utf8').split('\n')

const agents = new Map()
const agent = (pid) => agents.get(pid) ?? agents.set(pid, {}).get(pid)
const parentOf = new Map()
const waiting = new Map()
let waited = 0
let ran = 0
for (const text of lines) {
  const m = text.match(/^\s*(\S+)\s+(\d+)\s+\[(\d+)\]\s+(\d+\.\d+):\s+(\S+):\s*(.*)$/)
  if (!m) continue
  const [tid, t, event, rest] = [Number(m[2]), Number(m[4]) * 1e6, m[5], m[6]]
  const field = (name) => Number(rest.match(new RegExp(`(?:^|\\s)${name}=(\\d+)`))?.[1])
  switch (event) {
    case 'sched:sched_process_fork':
      agent(field('child_pid')).fork = t
      parentOf.set(field('child_pid'), field('pid'))
      break
    case 'syscalls:sys_enter_execve':
      agent(tid).execve ??= t
      break
    case 'sched:sched_process_exec':
      Object.assign(agent(field('pid')), { exec: t, isAgent: /fake_agent/.test(rest) })
      break
    case 'sched:sched_process_exit': {
      agent(field('pid')).exit ??= t
      const w = waiting.get(field('pid'))
      if (w) {
        if (w.ran) ran++
        else waited++
        waiting.delete(field('pid'))
      }
      break
    }
    case 'sched:sched_wakeup':
      // The child waking its parent: the vfork is over (the child exec'd).
      if (parentOf.get(tid) === field('pid')) {
        waiting.set(tid, { parent: field('pid'), ran: false })
        parentOf.delete(tid)
      }
      break
  }
  for (const w of waiting.values()) {
    if (tid === w.parent || (event === 'sched:sched_switch' && field('next_pid') === w.parent)) w.ran = true
  }
}

const done = [...agents.values()].filter((a) => a.isAgent && a.fork && a.execve && a.exec && a.exit)
done.sort((a, b) => a.fork - b.fork)
const median = (xs) => Math.round([...xs].sort((a, b) => a - b)[xs.length >> 1])
console.log(
  JSON.stringify({
    agents: done.length,
    cloneToExecve: median(done.map((a) => a.execve - a.fork)),
    execve: median(done.map((a) => a.exec - a.execve)),
    agentRun: median(done.map((a) => a.exit - a.exec)),
    exitToNextClone: median(done.slice(1).map((a, i) => a.fork - done[i].exit)),
    cycle: median(done.slice(1).map((a, i) => a.fork - done[i].fork)),
    parentWaitedForAgent: waited,
    parentRanMeanwhile: ran,
  }),
)
