'use strict'
// Runs every benchmark and writes the figures into BENCHMARKS.md.
// Each variant runs in a fresh process; the variants of one round run back to back
// in rotating order, and ratios are taken within a round, then the median across
// rounds, so a noisy machine shifts both sides of a ratio alike.
//
//   npm run bench                       (builds first)
//   ROUNDS=7 SESSIONS=500 node benches/run.js
//   ONLY=pool node benches/run.js        (one section: spawner, pool, scale, claude or shared)
//   SCALE_SESSIONS=1000 ONLY=scale node benches/run.js
//   CLAUDE_ROUNDS=21 ONLY=claude node benches/run.js
//   ONLY=shared node benches/run.js      (needs redis-server on PATH)
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT, AGENT, flushDisk } = require('./common')

const ROUNDS = Number(process.env.ROUNDS ?? 5)
const SESSIONS = Number(process.env.SESSIONS ?? 300)
const BYTES = Number(process.env.BYTES ?? 256 * 1024 * 1024)
const SCALE_SESSIONS = Number(process.env.SCALE_SESSIONS ?? 500)
const CLAUDE_ROUNDS = Number(process.env.CLAUDE_ROUNDS ?? 11)
const SHARED_REQUESTS = Number(process.env.SHARED_REQUESTS ?? 600)
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

for (const needed of [AGENT, ...['spawn_loop', 'core_loop', 'wake_probe'].map((e) => path.join(EXAMPLES, e))]) {
  if (!fs.existsSync(needed)) throw new Error(`${needed} missing: run \`npm run build:bench\` first`)
}
// `npm run build:debug` leaves a debug addon in native/, which would be measured instead.
if (require('../lib/native').buildProfile() !== 'release') {
  throw new Error('the addon in native/ is a debug build: run `npm run build:bench` first')
}

const figures = {}
const sections = { spawner: spawnerSection, pool: poolSection, scale: scaleSection, claude: claudeSection, shared: sharedSection }
const only = process.env.ONLY
if (only && !(only in sections)) throw new Error(`ONLY=${only}: no such section (${Object.keys(sections).join(', ')})`)

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

  // The same with an agent that lives a millisecond: what the spawner adds is then
  // partly hidden behind an agent that does not need the CPU all the time.
  const SLEEPER = ['sleep:1', 'exit:0']
  const sleeperVariants = {
    'plain Rust loop': () => {
      const r = json(path.join(EXAMPLES, 'spawn_loop'), [AGENT, String(SESSIONS), ...SLEEPER])
      return r.sessions / r.seconds
    },
    'native, from JS': () => node('spawn-rate.js', ['native', String(SESSIONS), ...SLEEPER]).rate,
  }
  const sleeperRates = Object.fromEntries(Object.keys(sleeperVariants).map((k) => [k, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of rotate(Object.keys(sleeperVariants), round)) sleeperRates[name].push(sleeperVariants[name]())
    process.stderr.write(`spawn rate (1 ms agent), round ${round + 1}/${ROUNDS}\n`)
  }
  const sleeperRatio = median(sleeperRates['native, from JS'].map((v, i) => v / sleeperRates['plain Rust loop'][i]))

  const throughputVariants = ['native', 'child_process', 'ts_spawner']
  const flows = Object.fromEntries(throughputVariants.map((k) => [k, []]))
  // More rounds than the spawn rate: one round of 256 MiB is short, so noisier.
  const tputRounds = Number(process.env.TPUT_ROUNDS ?? 9)
  for (let round = 0; round < tputRounds; round++) {
    for (const name of rotate(throughputVariants, round)) {
      flushDisk()
      flows[name].push(node('throughput.js', [name, String(BYTES)]))
    }
    process.stderr.write(`throughput, round ${round + 1}/${tputRounds}\n`)
  }
  const mibs = (name) => median(flows[name].map((r) => r.mibPerSecond))
  const peak = (name) => median(flows[name].map((r) => r.peakGrowthMiB))
  const flowRatio = (a, b) => median(flows[a].map((r, i) => r.mibPerSecond / flows[b][i].mibPerSecond))
  // What a hand-over between two threads costs here: a sequential session makes two
  // (to the supervising thread at spawn, back to JavaScript's at the end).
  const wakes = Array.from({ length: 3 }, () => json(path.join(EXAMPLES, 'wake_probe'), ['2000']))
  const wake = (k) => median(wakes.map((w) => w[k] ?? NaN))
  figures.spawner = { sessions: SESSIONS, bytes: BYTES, rates, sleeperRates, flows, wakes }

  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.
Spawn rate: working directories on ${tmpfs} (tmpfs), so the figures measure the spawner, not the disk.
Throughput: the working directory on disk (${os.tmpdir()}), as a daemon's is; the native session writes its log there, bare child_process does not.
${ROUNDS} rounds of ${SESSIONS} sequential sessions; ${tputRounds} rounds of ${BYTES / 1048576} MiB. Medians; ratios are
medians of per-round ratios.

**Sequential spawn-to-completion** (trivial agent: \`fake_agent exit:0\`, text protocol):

| variant | sessions/s (median) | ratio to plain Rust loop |
|---|---:|---:|
${Object.keys(spawnVariants).map((k) => `| ${k} | ${f0(median(rates[k]))} | ${f2(ratio(k, 'plain Rust loop'))} |`).join('\n')}

Native from JS against child_process from JS: **${f2(ratio('native, from JS', 'child_process, from JS'))}×**.
Target: native from JS ≥ 0.8 of the plain Rust loop.

The same with an agent that sleeps 1 ms before it exits (\`fake_agent sleep:1 exit:0\`): plain Rust loop
${f0(median(sleeperRates['plain Rust loop']))}/s, native from JS ${f0(median(sleeperRates['native, from JS']))}/s, ratio **${f2(sleeperRatio)}**.

One thread waking another and being woken back (\`examples/wake_probe\`, a byte through a socket
pair): ${f1(wake('sameCpuUs'))} µs on one CPU, ${f1(wake('twoCpusUs'))} µs across two, ${f1(wake('twoCpusIdleUs'))} µs across two when the
other CPU was idle (medians of 3 runs). See "Where a sequential session's time goes".

**${BYTES / 1048576} MiB of agent stdout to a JavaScript \`session-output\` listener**:

| variant | MiB/s (median) | peak RSS growth, MiB |
|---|---:|---:|
| native (\`session-output\` listener) | ${f0(mibs('native'))} | ${f0(peak('native'))} |
| child_process, listener only | ${f0(mibs('child_process'))} | ${f0(peak('child_process'))} |
| child_process as the TS spawner (keeps the output) | ${f0(mibs('ts_spawner'))} | ${f0(peak('ts_spawner'))} |

Native against the TS-spawner way: **${f2(flowRatio('native', 'ts_spawner'))}×** (target ≥ 2×); against a bare
child_process listener: **${f2(flowRatio('native', 'child_process'))}×** (target ≥ 0.8, with the full log on disk, which
the bare listener does not write; per round: ${flows.native.map((r, i) => f2(r.mibPerSecond / flows.child_process[i].mibPerSecond)).join(', ')}).
Target: RSS growth < 64 MiB.
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

/** Many concurrent sessions of a sleeping agent, against child_process doing the same. */
function scaleSection() {
  const variants = ['native', 'child_process']
  const runs = Object.fromEntries(variants.map((v) => [v, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const v of rotate(variants, round)) runs[v].push(node('scale.js', [v, String(SCALE_SESSIONS)]))
    process.stderr.write(`scale, round ${round + 1}/${ROUNDS}\n`)
  }
  figures.scale = { date: new Date().toISOString(), machine, sessions: SCALE_SESSIONS, runs }
  const med = (v, key) => median(runs[v].map((r) => r[key]))
  const ratio = (key) => median(runs.native.map((r, i) => r[key] / runs.child_process[i][key]))
  const n = SCALE_SESSIONS.toLocaleString('en')
  const rows = [
    ['runningMs', `all ${n} running, ms`, f0],
    ['rssGrowthMiB', `RSS growth with all running, MiB`, f1],
    ['peakGrowthMiB', 'peak RSS growth, MiB', f1],
    ['terminateMs', `terminate all until every one ended, ms`, f0],
  ]
  const met = (ok) => (ok ? 'met' : '**not met**')
  const targets = [
    [`${n} running`, '≈ 2.0 s', '< 1 s', `${f0(med('native', 'runningMs'))} ms`, met(med('native', 'runningMs') < 1000)],
    ['RSS growth (judged on the peak)', '≈ 25 MiB', '< 25 MiB', `${f1(med('native', 'rssGrowthMiB'))} MiB (peak ${f1(med('native', 'peakGrowthMiB'))})`, met(med('native', 'peakGrowthMiB') < 25)],
    ['terminate all', '–', '< 1 s', `${f0(med('native', 'terminateMs'))} ms`, met(med('native', 'terminateMs') < 1000)],
  ]
  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.
${ROUNDS} rounds, each variant in a fresh process, in rotating order; medians, ratios are medians of per-round ratios.
Both variants run ${n} concurrent \`fake_agent hang\` agents from one Node process, after ${runs.native[0].warmup} warm-up
sessions started and stopped: \`native\` is \`ClaudeSessionSpawner\` (text protocol; each session also gets its
directory, CLAUDE.md, two log files and a line in the spawner's state file, all on ${tmpfs}), started with \`spawnSession\` for all
(\`Promise.all\`), stopped with \`terminateSession\` for all (SIGTERM to each group), done at the last
\`session-ended\`. \`child_process\` is \`spawn\` with piped stdio, output read, the prompt written, \`detached: true\`;
running at the last \`'spawn'\` event, stopped with \`process.kill(-pid, 'SIGTERM')\` each, done at the last \`'close'\`.
RSS is \`process.memoryUsage().rss\` from a collected heap before starting to when all run; peak is the
process's maximum RSS (\`resourceUsage().maxRSS\`) minus the same start.

| step | native | child_process | native / child_process |
|---|---:|---:|---:|
${rows.map(([key, what, f]) => `| ${what} | ${f(med('native', key))} | ${f(med('child_process', key))} | ${f2(ratio(key))} |`).join('\n')}

Against the TypeScript spawner (figures from the issue) and the issue's targets:

| | TS spawner | target | native | |
|---|---:|---:|---:|---|
${targets.map((r) => `| ${r.join(' | ')} |`).join('\n')}
`
}

/** A real Claude Code session's start, through the spawner and launched by hand. */
function claudeSection() {
  const claude = path.join(ROOT, 'node_modules', '.bin', 'claude')
  if (!fs.existsSync(claude)) throw new Error(`${claude} missing: run \`npm install\` first`)
  const version = execFileSync(claude, ['--version'], { encoding: 'utf8' }).trim().split(' ')[0]
  const variants = ['native', 'direct']
  const runs = Object.fromEntries(variants.map((v) => [v, []]))
  // The CLI's first start after a while reads its 200 MB executable from disk: not counted.
  for (const v of variants) node('claude-overhead.js', [v])
  for (let round = 0; round < CLAUDE_ROUNDS; round++) {
    for (const v of rotate(variants, round)) runs[v].push(node('claude-overhead.js', [v]))
    process.stderr.write(`claude overhead, round ${round + 1}/${CLAUDE_ROUNDS}\n`)
  }
  figures.claude = { date: new Date().toISOString(), machine, version, runs }
  const med = (v, key) => median(runs[v].map((r) => r[key]))
  const ratio = (key) => median(runs.native.map((r, i) => r[key] / runs.direct[i][key]))
  const diff = (key) => median(runs.native.map((r, i) => r[key] - runs.direct[i][key]))
  const probe = runs.native[0].firstRequest
  const spread = runs.native.map((r, i) => r.firstMessagesMs - runs.direct[i].firstMessagesMs)
  const rows = [
    ['spawnedMs', 'agent started (`spawnSession` resolved / `\'spawn\'` event)', f1],
    ['firstMessagesMs', 'first `POST /v1/messages`'],
    ['firstRequestMs', `first request of any kind (\`${probe}\`)`],
    ['endMs', 'session over (`result`, stdin closed, exit 0)'],
  ]
  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}, Claude Code ${version}.
${CLAUDE_ROUNDS} rounds after one uncounted round, each variant in a fresh process, in rotating order;
medians (ms from starting the session), ratios and differences are medians of per-round ones.
One session each, against the scripted model server (\`test-support/model-server.js\`, one text answer) in
the same process, with a fresh working directory, \`CLAUDE_CONFIG_DIR\` and \`HOME\` as in the end-to-end
tests. \`native\`: \`ClaudeSessionSpawner\` (stream-json), clock started before \`spawnSession\`. \`direct\`:
\`child_process.spawn\` of the same executable with the argument vector \`src/protocol/stream_json.rs\`
builds (same CLAUDE.md text in \`--append-system-prompt\`, \`--tools Bash,Read,Write,Edit\`), the variables
the spawner adds, its own process group, the same first input (hook registration, task prompt), stdin
closed after the \`result\`; its clock starts at \`spawn\`, everything else prepared before.

| from start to | native | direct | native / direct | native − direct |
|---|---:|---:|---:|---:|
${rows.map(([key, what, f = f0]) => `| ${what} | ${f(med('native', key))} | ${f(med('direct', key))} | ${f2(ratio(key))} | ${f(diff(key))} |`).join('\n')}

Per-round differences for the first \`POST /v1/messages\` ranged from ${f0(Math.min(...spread))} to ${f0(Math.max(...spread))} ms: the CLI's own
start (${f0(med('direct', 'firstMessagesMs'))} ms to its first model request) varies far more from one launch to the next than
what the spawner adds before the agent runs (the first row).
`
}

/** Requests per second through the shared queue (three hosts, Redis) and the in-process queue. */
function sharedSection() {
  const requests = SHARED_REQUESTS
  const capacity = 6
  const variants = ['in-process', 'redis-1-host', 'redis-3-hosts']
  const runs = Object.fromEntries(variants.map((v) => [v, []]))
  const fsyncRuns = []
  for (let round = 0; round < ROUNDS; round++) {
    for (const v of rotate(variants, round)) runs[v].push(json(process.execPath, [path.join(__dirname, 'shared-queue.js'), v, String(requests), String(capacity)]))
    fsyncRuns.push(json(process.execPath, [path.join(__dirname, 'shared-queue.js'), 'redis-3-hosts', String(requests), String(capacity)], { REDIS_FSYNC: 'always' }))
    process.stderr.write(`shared queue, round ${round + 1}/${ROUNDS}\n`)
  }
  figures.shared = { requests, capacity, runs, fsyncRuns }
  const rate = (v) => median(runs[v].map((r) => r.rate))
  const ratio = (v) => median(runs[v].map((r, i) => r.rate / runs['in-process'][i].rate))
  const fsyncRatio = median(fsyncRuns.map((r, i) => r.rate / runs['in-process'][i].rate))
  const spread = runs['redis-3-hosts'].map((r) => r.ran.join(' / '))
  return `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}, ${redisVersion()}.
${ROUNDS} rounds, variants in rotating order, each in fresh processes; medians, ratios are medians of per-round
ratios. ${requests} requests submitted at once (priorities mixed), each a trivial agent (\`fake_agent exit:0\`), timed
from the first submission to the last \`onCompleted\`; ${capacity} sessions at once in all. The redis-server runs on
this machine (127.0.0.1), append-only file fsynced every second, and shares the 2 cores with the hosts and agents.

| variant | requests/s (median) | ratio to the in-process queue |
|---|---:|---:|
| in-process queue, one pool (\`SessionPool\` without \`queue\`) | ${f0(rate('in-process'))} | 1.00 |
| shared queue in Redis, one host (capacity ${capacity}) | ${f0(rate('redis-1-host'))} | ${f2(ratio('redis-1-host'))} |
| **shared queue in Redis, three hosts** (three Node processes, capacity ${capacity / 3} each) | ${f0(rate('redis-3-hosts'))} | **${f2(ratio('redis-3-hosts'))}** |
| three hosts, Redis fsyncing every write (\`appendfsync always\`) | ${f0(median(fsyncRuns.map((r) => r.rate)))} | ${f2(fsyncRatio)} |

Requests run per host in the three-host rounds: ${spread.join('; ')}.

Where the difference goes (one host, CPU per request, medians): the pool's Node process (all its threads)
${f2(median(runs['in-process'].map((r) => r.nodeCpuMsPerRequest)))} ms with the in-process queue, ${f2(median(runs['redis-1-host'].map((r) => r.nodeCpuMsPerRequest)))} ms with Redis; redis-server ${f2(median(runs['redis-1-host'].map((r) => r.redisCpuMsPerRequest)))} ms.
Each request through Redis is five scripts (push, take, started, finish, and a renewal per tick while it
runs) and four events (queued, allocated, started, completed) that every host reads; on 2 cores shared with
Redis and the agents, that CPU is what the rate pays for. Spawning the agent is the same in both.
Command: \`ONLY=shared node benches/run.js\` (\`benches/shared-queue.js <variant> <requests> <capacity>\` for one run).
`
}

function redisVersion() {
  const v = execFileSync('redis-server', ['--version'], { encoding: 'utf8' })
  return `Redis ${/v=(\S+)/.exec(v)?.[1] ?? v.trim()}`
}

const page = path.join(ROOT, 'BENCHMARKS.md')
let text = fs.readFileSync(page, 'utf8')
for (const [name, section] of Object.entries(sections)) {
  if (only && only !== name) continue
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  // Checked before running: a missing marker would otherwise splice the page at -1.
  if (!text.includes(start) || !text.includes(end)) throw new Error(`BENCHMARKS.md has no ${start} ... ${end} section`)
  const md = section()
  text = text.slice(0, text.indexOf(start) + start.length) + '\n' + md + text.slice(text.indexOf(end))
  console.log(md)
}
fs.writeFileSync(page, text)

const latest = path.join(__dirname, 'results', 'latest.json')
const previous = fs.existsSync(latest) ? JSON.parse(fs.readFileSync(latest, 'utf8')) : {}
const results = { ...previous, date: new Date().toISOString(), machine, rounds: ROUNDS, ...figures }
fs.mkdirSync(path.dirname(latest), { recursive: true })
fs.writeFileSync(latest, JSON.stringify(results, null, 2) + '\n')
