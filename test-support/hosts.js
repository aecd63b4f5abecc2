'use strict'
// Pool hosts (test-support/pool-host.js) as child Node processes, for the
// multi-host tests and the shared-queue benchmark: start them, send them work,
// wait for what they report (with a deadline), SIGKILL one. Messages are structured
// clones, so a config's RegExps and Dates reach the host as they are.

const { fork } = require('node:child_process')
const { EventEmitter } = require('node:events')
const path = require('node:path')

const HOST_SCRIPT = path.join(__dirname, 'pool-host.js')

class Host {
  constructor(options) {
    this.name = options.host
    this.capacity = options.capacity
    this.messages = []
    this.waiters = []
    this.stderr = ''
    this.child = fork(HOST_SCRIPT, [JSON.stringify(options)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' })
    this.child.stderr.on('data', (d) => (this.stderr += d))
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })))
    this.child.on('message', (m) => {
      this.messages.push(m)
      for (const w of [...this.waiters]) w.check()
    })
    this.child.on('exit', () => {
      for (const w of [...this.waiters]) w.check()
    })
  }

  get pid() {
    return this.child.pid
  }

  send(message) {
    this.child.send(message)
  }

  /** Resolves with the first message (from now on or already received) that `accept` takes. */
  waitFor(what, accept, ms = 20_000) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const found = this.messages.find(accept)
          if (found) {
            done()
            resolve(found)
          } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
            done()
            reject(new Error(`host ${this.name} exited while waiting for ${what}; stderr: ${this.stderr}`))
          }
        },
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`host ${this.name}: no ${what} within ${ms} ms; stderr: ${this.stderr}`))
      }, ms)
      const done = () => {
        clearTimeout(timer)
        this.waiters = this.waiters.filter((w) => w !== waiter)
      }
      this.waiters.push(waiter)
      waiter.check()
    })
  }

  /** The most sessions this host had alive at once. */
  maxActive() {
    return this.messages.filter((m) => m.ev === 'active').reduce((max, m) => Math.max(max, m.n), 0)
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) process.kill(this.child.pid, 'SIGKILL')
    return this.exited
  }

  /** Disconnects; the host closes its pool and exits. */
  async stop() {
    if (this.child.connected) this.child.disconnect()
    return this.exited
  }
}

/**
 * The queue's own events (through the internal SharedQueue), in the order Redis
 * recorded them: the record of what was queued, and who took, started and finished
 * what. Resolves once the watcher is live (a probe's event came through).
 * `until(what, check, ms)` waits for `check()` to hold as events arrive.
 */
async function watchQueue(url, name) {
  const { SharedQueue } = require('../lib/shared-queue')
  const queue = await SharedQueue.connectRedis(url, name)
  const events = []
  const emitter = new EventEmitter()
  for (const event of ['queued', 'allocated', 'started', 'completed', 'failed', 'cancelled', 'requeued']) {
    queue.on(event, (e) => {
      events.push({ name: event, ...e })
      emitter.emit('event')
    })
  }
  const until = (what, check, ms = 30_000) =>
    new Promise((resolve, reject) => {
      const test = () => {
        if (!check()) return
        clearTimeout(timer)
        emitter.off('event', test)
        resolve()
      }
      const timer = setTimeout(() => {
        emitter.off('event', test)
        reject(new Error(`no ${what} within ${ms} ms; the queue's events: ${JSON.stringify(events)}`))
      }, ms)
      emitter.on('event', test)
      test()
    })
  for (let i = 0; ; i++) {
    const probe = `probe-${i}`
    await queue.push(probe, 'low', '{}', 1)
    await queue.cancel(probe)
    const seen = await until('probe', () => events.some((e) => e.name === 'cancelled' && e.id === probe), 300).then(
      () => true,
      () => false,
    )
    if (seen) break
    if (i === 50) throw new Error('the queue watcher never saw its own events')
  }
  events.splice(0)
  return { queue, events, until, close: () => queue.close() }
}

/** `count` hosts on the queue `name`, named `<hostPrefix or name>-h<i>`; resolves once each is ready. */
async function startHosts(count, options) {
  const hosts = Array.from({ length: count }, (_, i) => new Host({ ...options, host: `${options.hostPrefix ?? options.name}-h${i}`, capacity: options.capacities?.[i] ?? options.capacity }))
  await Promise.all(hosts.map((h) => h.waitFor('ready', (m) => m.ev === 'ready')))
  return hosts
}

module.exports = { Host, startHosts, watchQueue }
