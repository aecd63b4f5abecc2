'use strict'
// Runs every benchmark and writes the figures into BENCHMARKS.md.
// Each variant runs in a fresh process; the variants of one round run back to back
// in rotating order, and ratios are taken within a round, then the median across
// rounds, so a noisy machine shifts both sides of a ratio alike.
//
//   npm run bench                       (builds first)
//   ROUNDS=7 SESSIONS=500 node benches/run.js
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

const rustc = execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim()
const machine = `${os.cpus().length} × ${os.cpus()[0].model}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Node ${process.version}, ${rustc}`
const f0 = (n) => n.toFixed(0)
const f2 = (n) => n.toFixed(2)
const md = `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.
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

const results = { date: new Date().toISOString(), machine, rounds: ROUNDS, sessions: SESSIONS, bytes: BYTES, rates, flows }
fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true })
fs.writeFileSync(path.join(__dirname, 'results', 'latest.json'), JSON.stringify(results, null, 2) + '\n')
const page = path.join(ROOT, 'BENCHMARKS.md')
const start = '<!-- spawner:start -->'
const end = '<!-- spawner:end -->'
const text = fs.readFileSync(page, 'utf8')
fs.writeFileSync(page, text.slice(0, text.indexOf(start) + start.length) + '\n' + md + text.slice(text.indexOf(end)))
console.log(md)
