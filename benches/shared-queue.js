'use strict'
// Requests per second through a pool, trivial agents (`fake_agent exit:0`), every
// request submitted at once and timed until the last has completed.
// node benches/shared-queue.js <in-process|redis-1-host|redis-3-hosts> <requests> <capacity>
//
// `in-process`: one SessionPool with its own queue (the default), in this process.
// `redis-1-host`: the same pool on a queue in Redis (a redis-server started here).
// `redis-3-hosts`: three pools as three Node processes on one queue in Redis, each
// with a third of the capacity and submitting a third of the requests.
// Redis keeps an append-only file, fsynced every second (REDIS_FSYNC=always: every write).
const path = require('node:path')
const { AGENT, workDir, config, spawnerPackage } = require('./common')
const { RedisServer } = require('../test-support/redis-server')
const { startHosts } = require('../test-support/hosts')

const PRIORITIES = ['critical', 'high', 'medium', 'low']
const SPAWNER = { claudePath: AGENT, protocol: 'text', extraArgs: ['exit:0'] }

/** CPU milliseconds of this process (all its threads) since `since`. */
function cpuMs(since) {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1000
}

async function onePool(count, capacity, queue, redis) {
  const { default: ClaudeSessionSpawner, SessionPool } = spawnerPackage()
  const spawner = new ClaudeSessionSpawner(SPAWNER)
  const pool = new SessionPool(spawner, { maxConcurrentSessions: capacity, defaultSessionTimeout: 0, maxQueueSize: count, ...(queue ? { queue } : {}) })
  const cfg = config(workDir('shared'))
  if (queue) await pool.getPoolStatusAsync() // connected before the clock starts
  const redisCpu = redis ? await redis.cpuSeconds() : 0
  const cpu = process.cpuUsage()
  const started = process.hrtime.bigint()
  await new Promise((resolve, reject) => {
    let left = count
    for (let i = 0; i < count; i++) {
      pool
        .requestSession({ requestId: `r-${i}`, priority: PRIORITIES[i % 4], queuedAt: new Date(), config: cfg, onCompleted: () => --left === 0 && resolve(), onFailed: reject })
        .catch(reject)
    }
  })
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const nodeCpuMs = cpuMs(cpu)
  const redisCpuMs = redis ? ((await redis.cpuSeconds()) - redisCpu) * 1000 : 0
  await pool.close()
  return { seconds, nodeCpuMsPerRequest: nodeCpuMs / count, redisCpuMsPerRequest: redisCpuMs / count }
}

async function threeHosts(redis, count, capacity) {
  const name = `bench-${process.pid}`
  const hosts = await startHosts(3, { url: redis.url, name, capacity: Math.max(1, Math.round(capacity / 3)), leaseMs: 30_000, pollIntervalMs: 1000, spawner: SPAWNER })
  const cfg = config(workDir('shared'))
  const share = Math.floor(count / 3)
  const started = process.hrtime.bigint()
  hosts.forEach((h, i) => h.send({ op: 'burst', count: share, prefix: `h${i}`, config: cfg }))
  await Promise.all(hosts.map((h) => h.waitFor('the burst', (m) => m.ev === 'burst-done' || m.ev === 'burst-failed', 300_000)))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const failed = hosts.flatMap((h) => h.messages.filter((m) => m.ev === 'burst-failed'))
  if (failed.length > 0) throw new Error(`failed: ${JSON.stringify(failed[0])}`)
  const ran = hosts.map((h) => h.messages.filter((m) => m.ev === 'active' && m.change === 'ended').length)
  await Promise.all(hosts.map((h) => h.stop()))
  return { seconds, requests: share * 3, ran }
}

async function main() {
  const [variant, countText, capacityText] = process.argv.slice(2)
  const count = Number(countText)
  const capacity = Number(capacityText)
  let result
  if (variant === 'in-process') {
    result = { variant, requests: count, ...(await onePool(count, capacity)) }
  } else {
    const redis = await RedisServer.start({ fsync: process.env.REDIS_FSYNC ?? 'everysec' })
    try {
      if (variant === 'redis-1-host') {
        result = { variant, requests: count, ...(await onePool(count, capacity, { kind: 'redis', url: redis.url, name: `bench-${process.pid}` }, redis)) }
      } else if (variant === 'redis-3-hosts') {
        result = { variant, ...(await threeHosts(redis, count, capacity)) }
      } else {
        throw new Error(`unknown variant ${variant}`)
      }
    } finally {
      await redis.stop()
    }
  }
  result.rate = result.requests / result.seconds
  console.log(JSON.stringify(result))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
