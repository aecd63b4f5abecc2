'use strict'
// Runs every benchmark and writes the figures into BENCHMARKS.md.
// Each variant runs in a fresh process; the variants of one round run back to back
// in rotating order, and ratios are taken within a round, then the median across
// rounds, so a noisy machine shifts both sides of a ratio alike.
//
//   npm run bench                       (builds first)
//   ROUNDS=7 SESSIONS=500 node benches/run.js
//   ONLY=pool node benches/run.js        (one section: spawner or pool)
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, AGENT } = require('./common')

const ROUNDS = Number(process.env.ROUNDS ?? 5)
const SESSIONS = Number(process.env.SESSIONS ?? 300)
const BYTES = Number(process.env.BYTES ?? 256 * 1024 * 1024)
const EXAMPLES = path.join(ROOT, 'target', 'release', 'examples')

function json(file, args, env = {}) {
  const out = execFileSync(file, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 20 })
  return JSON.parse(out.trim().split('\n').pop())
}

const node = (script, args) => json(process.execPath, ['--expose-gc', path.join(__dirname, script), ...args])
const tmpfs = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir()

function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function rotate(list, by) {
  return list.slice(by % list.length).concat(list.slice(0, by % list.length))
}

for (const needed of [AGENT, path.join(EXAMPLES, 'spawn_loop'), path.join(EXAMPLES, 'core_loop')]) {
  if (!fs.existsSync(needed)) throw new Error(`${needed} missing: run \`npm run build:bench\` first`)
}

const figures = {}
const sections = { spawner: spawnerSection, pool: poolSection }
const only = process.env.ONLY

const rustc = execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim()
const machine = `${os.cpus().length} × ${os.cpus()[0].model}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Node ${process.version}, ${rustc}`
const f0 = (n) => n.toFixed(0)
const f1 = (n) => n.toFixed(1)
const f2 = (n) => n.toFixed(2)

function spawnerSection() {
  const spawnVariants = {
    'plain Rust loop': () => {
      const r = json(path.join(EXAMPLES, 'spawn_loop'), [AGENT, String(SESSIONS), 'exit:0'])
      return r.sessions / r.seconds
    },
    'Rust core (no Node)': () => {
      const r = json(path.join(EXAMPLES, 'core_loop'), [AGENT, String(SESSIONS), 'exit:0'], { TMPDIR: tmpfs })
      return r.sessions / r.seconds
    },
    'native, from JS': () => node('spawn-rate.js', ['native', String(SESSIONS)]).rate,
    'child_process, from JS': () => node('spawn-rate.js', ['child_process', String(SESSIONS)]).rate,
  }

  const rates = Object.fromEntries(Object.keys(spawnVariants).map((k) => [k, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of rotate(Object.keys(spawnVariants), round)) rates[name].push(spawnVariants[name]())
    process.stderr.write(`spawn rate, round ${round + 1}/${ROUNDS}\n`)
  }
  const ratio = (a, b) => median(rates[a].map((v, i) => v / rates[b][i]))

  const throughputVariants = ['native', 'child_process', 'ts_spawner']
  const flows = Object.fromEntries(throughputVariants.map((k) => [k, []]))
  const tputRounds = Math.max(1, Math.ceil(ROUNDS / 2))
  for (let round = 0; round < tputRounds; round++) {
    for (const name of rotate(throughputVariants, round)) flows[name].push(node('throughput.js', [name, String(BYTES)]))
    process.stderr.write(`throughput, round ${round + 1}/${tputRounds}\n`)
  }
  const mibs = (name) => median(flows[name].map((r) => r.mibPerSecond))
  const peak = (name) => median(flows[name].map((r) => r.peakGrowthMiB))
  const flowRatio = (a, b) => median(flows[a].map((r, i) => r.mibPerSecond / flows[b][i].mibPerSecond))
  figures.spawner = { sessions: SESSIONS, bytes: BYTES, rates, flows }

  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.
Working directories on ${tmpfs} (tmpfs), so the figures measure the spawner, not the disk.
${ROUNDS} rounds of ${SESSIONS} sequential sessions; ${tputRounds} rounds of ${BYTES / 1048576} MiB. Medians; ratios are
medians of per-round ratios.

**Sequential spawn-to-completion** (trivial agent: \`fake_agent exit:0\`, text protocol):

| variant | sessions/s (median) | ratio to plain Rust loop |
|---|---:|---:|
${Object.keys(spawnVariants).map((k) => `| ${k} | ${f0(median(rates[k]))} | ${f2(ratio(k, 'plain Rust loop'))} |`).join('\n')}

Native from JS against child_process from JS: **${f2(ratio('native, from JS', 'child_process, from JS'))}×**.
Target: native from JS ≥ 0.8 of the plain Rust loop.

**${BYTES / 1048576} MiB of agent stdout to a JavaScript \`session-output\` listener**:

| variant | MiB/s (median) | peak RSS growth, MiB |
|---|---:|---:|
| native (\`session-output\` listener) | ${f0(mibs('native'))} | ${f0(peak('native'))} |
| child_process, listener only | ${f0(mibs('child_process'))} | ${f0(peak('child_process'))} |
| child_process as the TS spawner (keeps the output) | ${f0(mibs('ts_spawner'))} | ${f0(peak('ts_spawner'))} |

Native against the TS-spawner way: **${f2(flowRatio('native', 'ts_spawner'))}×** (target ≥ 2×); against a bare
child_process listener: ${f2(flowRatio('native', 'child_process'))}×. Target: RSS growth < 64 MiB.
`
}

/** Enqueueing behind a full pool and one getPoolStatus, against the linear-scan algorithm. */
function poolSection() {
  const sizes = [10_000, 40_000]
  const runs = { native: {}, linear: {} }
  const poolRounds = Math.max(1, Math.ceil(ROUNDS / 2))
  for (let round = 0; round < poolRounds; round++) {
    for (const size of sizes) {
      for (const variant of rotate(['native', 'linear'], round)) {
        ;(runs[variant][size] ??= []).push(node('pool-queue.js', [variant, String(size)]))
      }
    }
    process.stderr.write(`pool queue, round ${round + 1}/${poolRounds}\n`)
  }
  figures.pool = runs
  const med = (variant, size, key) => median(runs[variant][size].map((r) => r[key]))
  const vs = (size, key) => median(runs.native[size].map((r, i) => runs.linear[size][i][key] / r[key]))
  const quoted = { 10000: { enqueueMs: 960, statusMs: 64 }, 40000: { enqueueMs: 7000, statusMs: 600 } }
  const rows = sizes
    .flatMap((size) =>
      ['enqueueMs', 'statusMs'].map((key) => {
        const what = key === 'enqueueMs' ? `enqueue ${size.toLocaleString('en')}` : `getPoolStatus, ${size.toLocaleString('en')} queued`
        const native = med('native', size, key)
        return `| ${what} | ${f1(native)} | ${f0(med('linear', size, key))} | ${f0(vs(size, key))}× | ${quoted[size][key]} | ${f0(quoted[size][key] / native)}× |`
      }),
    )
    .join('\n')
  const growth = (key) => f1(med('native', 40_000, key) / med('native', 10_000, key))
  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.
${poolRounds} rounds, each size and variant in a fresh process; medians (ms), ratios are medians of per-round ratios.
\`native\` is this package's \`SessionPool\` (capacity 1, held by a live agent, so every request queues; a
\`request-queued\` listener attached). \`linear\` is the TypeScript module's algorithm as the pool issue
describes it (insert by scanning the queue, each estimate by another scan), run in the same round.
Each timed step starts from a collected heap (\`--expose-gc\`).

| step | native, ms | linear scan, ms | native vs linear | TS module (issue), ms | native vs that |
|---|---:|---:|---:|---:|---:|
${rows}

Growth from 10,000 to 40,000 (4× the requests): enqueue ×${growth('enqueueMs')}, getPoolStatus ×${growth('statusMs')}.
Target: at least 20× faster than the TS module's figures, growth close to linear.
`
}

const page = path.join(ROOT, 'BENCHMARKS.md')
let text = fs.readFileSync(page, 'utf8')
for (const [name, section] of Object.entries(sections)) {
  if (only && only !== name) continue
  const md = section()
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  text = text.slice(0, text.indexOf(start) + start.length) + '\n' + md + text.slice(text.indexOf(end))
  console.log(md)
}
fs.writeFileSync(page, text)

const latest = path.join(__dirname, 'results', 'latest.json')
const previous = fs.existsSync(latest) ? JSON.parse(fs.readFileSync(latest, 'utf8')) : {}
const results = { ...previous, date: new Date().toISOString(), machine, rounds: ROUNDS, ...figures }
fs.mkdirSync(path.dirname(latest), { recursive: true })
fs.writeFileSync(latest, JSON.stringify(results, null, 2) + '\n')
