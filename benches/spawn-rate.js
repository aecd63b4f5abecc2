'use strict'
// Sequential spawn-to-completion rate of one variant, in this process.
// node benches/spawn-rate.js <native|child_process> <sessions> [agent steps...]
// (the agent's steps default to `exit:0`)
const fs = require('node:fs')
const { AGENT, workDir, config, childProcessSession, spawnerPackage } = require('./common')

async function main() {
  const [variant, countText, ...given] = process.argv.slice(2)
  const steps = given.length > 0 ? given : ['exit:0']
  const count = Number(countText)
  const dir = workDir('rate')
  let run
  if (variant === 'native') {
    const ClaudeSessionSpawner = spawnerPackage().default
    const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: steps, historySize: 10 })
    const cfg = config(dir)
    run = async () => {
      const session = await spawner.spawnSession(cfg)
      await session.completion
      spawner.cleanupCompletedSessions()
    }
  } else if (variant === 'child_process') {
    run = () => childProcessSession(dir, steps)
  } else {
    throw new Error(`unknown variant ${variant}`)
  }
  for (let i = 0; i < Math.min(50, count); i++) await run()
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) await run()
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(JSON.stringify({ variant, sessions: count, seconds, rate: count / seconds }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
