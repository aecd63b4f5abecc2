'use strict'
// This tree against another checkout of the project, in the same run, the two builds
// alternating round by round (the machine is too noisy to compare runs made apart):
// output throughput (with a bare child_process listener in each round) and the
// sequential spawn-to-completion rate.
//
//   node benches/ab.js <other checkout> [rounds] [bytes] [sessions]
//
// Both checkouts need their release build (`npm run build:bench` here; in the other,
// its own `napi build --release` into native/). Both run this tree's fake agent and
// benchmark scripts, so only the spawner differs. Prints one JSON line.
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { flushDisk } = require('./common')

const [other, roundsText = '9', bytesText = String(256 << 20), sessionsText = '400'] = process.argv.slice(2)
if (!other) {
  console.error('usage: node benches/ab.js <other checkout> [rounds] [bytes] [sessions]')
  process.exit(2)
}
const HERE = path.join(__dirname, '..')
const rounds = Number(roundsText)

/** Runs one of this tree's bench scripts with `tree`'s package as the spawner. */
function run(tree, script, args, nodeArgs = []) {
  const out = execFileSync(process.execPath, [...nodeArgs, path.join(__dirname, script), ...args], {
    env: { ...process.env, CLAUDE_SESSION_SPAWNER_PACKAGE: path.resolve(tree) },
    encoding: 'utf8',
  })
  return JSON.parse(out.trim().split('\n').pop())
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const rows = []
for (let round = 0; round < rounds; round++) {
  const order = round % 2 ? [other, HERE] : [HERE, other]
  const flow = {}
  // Each after a sync: a run must not pay for the writeback of the log before it.
  for (const tree of order) {
    flushDisk()
    flow[tree] = run(tree, 'throughput.js', ['native', bytesText], ['--expose-gc'])
  }
  flushDisk()
  const bare = run(HERE, 'throughput.js', ['child_process', bytesText], ['--expose-gc'])
  const rate = {}
  for (const tree of order) rate[tree] = run(tree, 'spawn-rate.js', ['native', sessionsText]).rate
  rows.push({ flow, bare, rate })
  process.stderr.write(`round ${round + 1}/${rounds}\n`)
}

const pick = (f) => rows.map(f)
const summary = {
  other: path.resolve(other),
  rounds,
  bytes: Number(bytesText),
  sessions: Number(sessionsText),
  mibPerSecond: {
    this: median(pick((r) => r.flow[HERE].mibPerSecond)),
    other: median(pick((r) => r.flow[other].mibPerSecond)),
    childProcess: median(pick((r) => r.bare.mibPerSecond)),
  },
  ratioToChildProcess: {
    this: median(pick((r) => r.flow[HERE].mibPerSecond / r.bare.mibPerSecond)),
    other: median(pick((r) => r.flow[other].mibPerSecond / r.bare.mibPerSecond)),
  },
  peakRssGrowthMiB: {
    this: median(pick((r) => r.flow[HERE].peakGrowthMiB)),
    other: median(pick((r) => r.flow[other].peakGrowthMiB)),
    childProcess: median(pick((r) => r.bare.peakGrowthMiB)),
  },
  spawnRate: {
    this: median(pick((r) => r.rate[HERE])),
    other: median(pick((r) => r.rate[other])),
    ratio: median(pick((r) => r.rate[HERE] / r.rate[other])),
  },
  perRound: rows.map((r) => ({
    ratioThis: +(r.flow[HERE].mibPerSecond / r.bare.mibPerSecond).toFixed(2),
    ratioOther: +(r.flow[other].mibPerSecond / r.bare.mibPerSecond).toFixed(2),
    rateRatio: +(r.rate[HERE] / r.rate[other]).toFixed(2),
  })),
}
console.log(JSON.stringify(summary))
