'use strict'
// Output throughput to a JavaScript listener, and the peak RSS it took.
// node benches/throughput.js <native|child_process|ts_spawner> <bytes>
const fs = require('node:fs')
const { AGENT, workDir, config, childProcessSession, rssMiB, peakRssMiB, spawnerPackage } = require('./common')

async function main() {
  const [variant, bytesText] = process.argv.slice(2)
  const bytes = Number(bytesText)
  // On disk, as a daemon's working directories are: the session's log is written there.
  const dir = workDir('throughput', true)
  const args = [`blast-out:${bytes}`]
  global.gc?.()
  const rssBefore = rssMiB()
  let delivered = 0
  const started = process.hrtime.bigint()
  if (variant === 'native') {
    const ClaudeSessionSpawner = spawnerPackage().default
    const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: args })
    spawner.on('session-output', ({ data }) => (delivered += data.length))
    const session = await spawner.spawnSession(config(dir))
    await session.completion
  } else if (variant === 'child_process') {
    // Same delivery (strings to a listener), nothing kept.
    await childProcessSession(dir, args, (d) => (delivered += d.length))
  } else if (variant === 'ts_spawner') {
    // As the TypeScript spawner did: every chunk kept, tested and emitted to a listener.
    const { EventEmitter } = require('node:events')
    const emitter = new EventEmitter()
    emitter.on('session-output', ({ data }) => (delivered += data.length))
    await childProcessSession(dir, args, undefined, emitter)
  } else {
    throw new Error(`unknown variant ${variant}`)
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const peakGrowth = peakRssMiB() - rssBefore
  fs.rmSync(dir, { recursive: true, force: true })
  if (delivered !== bytes) throw new Error(`delivered ${delivered} of ${bytes} bytes`)
  console.log(JSON.stringify({ variant, bytes, seconds, mibPerSecond: bytes / 1048576 / seconds, rssBeforeMiB: rssBefore, peakGrowthMiB: peakGrowth }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
