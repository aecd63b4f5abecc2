'use strict'
// Sequential spawn-to-completion latency of two or more builds in one process, the
// builds taking turns session by session (the order flipped every other turn), so a
// slow stretch of the machine hits them alike. Tighter than comparing separate runs:
// on this 2-core VM, two runs of one build differ by more than two builds do.
//
//   node benches/interleaved.js <sessions per build> <package dir> <package dir>...
//
// Each package dir is a checkout with its release build (see benches/ab.js). Prints
// one JSON line: per build, the median, mean, 10th and 90th percentile of a session's
// latency (µs, from `spawnSession` to its completion), and the median time until
// `spawnSession` resolved; then each build's median over the first's.
//
// With INTERLEAVED_TAG=1, each build runs its own copy of the fake agent, named
// `fake_agent_a`, `fake_agent_b`, ... in order, so that a kernel trace of the run tells
// the builds' sessions apart (benches/trace-builds.js reads it).
const fs = require('node:fs')
const path = require('node:path')
const { AGENT, workDir, config } = require('./common')

const [countText, ...dirs] = process.argv.slice(2)
const count = Number(countText)
if (!(count > 0) || dirs.length < 2) {
  console.error('usage: node benches/interleaved.js <sessions per build> <package dir> <package dir>...')
  process.exit(2)
}

const quantile = (xs, q) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]
}

/** The agent each build runs: the same program, under a name of its own when tagged. */
function agents() {
  if (process.env.INTERLEAVED_TAG !== '1') return dirs.map(() => AGENT)
  return dirs.map((_, i) => {
    // Beside the original: a temporary directory may be mounted noexec.
    const copy = `${AGENT}_${String.fromCharCode(97 + i)}`
    fs.copyFileSync(AGENT, copy)
    fs.chmodSync(copy, 0o755)
    return copy
  })
}

async function main() {
  const dir = workDir('interleaved')
  const programs = agents()
  const spawners = dirs.map((d, i) => {
    const ClaudeSessionSpawner = require(path.resolve(d)).default
    return new ClaudeSessionSpawner({ claudePath: programs[i], protocol: 'text', extraArgs: ['exit:0'], historySize: 10 })
  })
  const cfg = config(dir)
  const total = dirs.map(() => [])
  const started = dirs.map(() => [])
  const one = async (i) => {
    const t0 = process.hrtime.bigint()
    const session = await spawners[i].spawnSession(cfg)
    const t1 = process.hrtime.bigint()
    await session.completion
    spawners[i].cleanupCompletedSessions()
    const t2 = process.hrtime.bigint()
    return [Number(t1 - t0) / 1000, Number(t2 - t0) / 1000]
  }
  for (let turn = 0; turn < 100; turn++) for (let i = 0; i < dirs.length; i++) await one(i)
  for (let turn = 0; turn < count; turn++) {
    const order = turn % 2 ? [...dirs.keys()].reverse() : [...dirs.keys()]
    for (const i of order) {
      const [start, all] = await one(i)
      started[i].push(start)
      total[i].push(all)
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
  const builds = dirs.map((d, i) => ({
    build: d,
    medianUs: Math.round(quantile(total[i], 0.5)),
    meanUs: Math.round(total[i].reduce((a, b) => a + b, 0) / count),
    p10Us: Math.round(quantile(total[i], 0.1)),
    p90Us: Math.round(quantile(total[i], 0.9)),
    startedMedianUs: Math.round(quantile(started[i], 0.5)),
  }))
  const ratios = builds.map((b) => +(b.medianUs / builds[0].medianUs).toFixed(3))
  console.log(JSON.stringify({ sessions: count, builds, medianOverFirst: ratios }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
