'use strict'
// A real redis-server for tests and benchmarks: 127.0.0.1, a free port, its own
// directory, append-only persistence with, unless told otherwise, an fsync per write
// (so a SIGKILL loses nothing that was acknowledged); stopped by its pid. `restart()` brings it back on
// the same port with the same data.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** One PING; true when the server answered PONG (not LOADING, not an error). */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    const done = (ok) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (d) => {
      reply += d
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
  })
}

class RedisServer {
  constructor(port, dir, fsync) {
    this.fsync = fsync
    this.port = port
    this.dir = dir
    this.url = `redis://127.0.0.1:${port}/`
    this.child = null
    this.exited = null
  }

  /** `fsync`: Redis's `appendfsync`, `always` unless told (`everysec`, `no`). */
  static async start({ fsync = 'always' } = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'css-redis-'))
    const server = new RedisServer(await freePort(), dir, fsync)
    await server.#spawn()
    return server
  }

  get pid() {
    return this.child?.pid
  }

  get log() {
    return path.join(this.dir, 'redis.log')
  }

  async #spawn() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--appendonly', 'yes',
      '--appendfsync', this.fsync, '--save', '', '--logfile', this.log]
    const child = spawn('redis-server', args, { stdio: 'ignore' })
    this.child = child
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()))
    let failed
    child.on('error', (e) => (failed = e))
    const deadline = Date.now() + 15_000
    while (!(await ping(this.port))) {
      if (failed) throw new Error(`cannot start redis-server (is it on PATH? Debian: apt-get install redis-server): ${failed.message}`)
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${fs.readFileSync(this.log, 'utf8')}`)
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer PING within 15 s`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }

  /** SIGKILL, then waits for the exit. */
  async kill() {
    if (this.child === null) return
    const child = this.child
    this.child = null
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL')
    await this.exited
  }

  /** Killed and started again on the same port, from its append-only file. */
  async restart() {
    await this.kill()
    await this.#spawn()
  }

  /** Started again after `kill()`, on the same port, from its append-only file. */
  async revive() {
    if (this.child !== null) throw new Error('redis-server is running')
    await this.#spawn()
  }

  /** Sends one command (strings), resolves with the first line of the reply. */
  command(...args) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(this.port, '127.0.0.1')
      let reply = ''
      socket.on('error', reject)
      socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`))
      socket.on('data', (d) => {
        reply += d
        if (reply.includes('\r\n')) {
          socket.destroy()
          resolve(reply.slice(0, reply.indexOf('\r\n')))
        }
      })
    })
  }

  /** CPU seconds the server has used (user + system), from INFO. */
  cpuSeconds() {
    return new Promise((resolve, reject) => {
      const socket = net.connect(this.port, '127.0.0.1')
      let reply = ''
      socket.on('error', reject)
      socket.on('connect', () => socket.write('INFO cpu\r\n'))
      socket.on('data', (d) => {
        reply += d
        const user = /used_cpu_user:([\d.]+)/.exec(reply)
        const sys = /used_cpu_sys:([\d.]+)/.exec(reply)
        if (user && sys && reply.includes('used_cpu_user_children')) {
          socket.destroy()
          resolve(Number(user[1]) + Number(sys[1]))
        }
      })
    })
  }

  async stop() {
    await this.kill()
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

module.exports = { RedisServer, freePort, ping }
