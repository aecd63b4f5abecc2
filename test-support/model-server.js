'use strict'
// A scripted stand-in for the Anthropic Messages API on 127.0.0.1, so the real
// Claude Code CLI can run end to end with no network: it answers
// `POST /v1/messages` with the Server-Sent Events stream the API sends, following a
// script, records every request it gets, and counts the tokens it reported.
//
//   const model = await ScriptedModel.start([
//     { toolUse: { name: 'Bash', input: { command: 'ls' } } },
//     { text: 'Done.' },
//   ])
//   // ANTHROPIC_BASE_URL=model.url claude -p ...
//   await model.stop()
//
// A script step is an object, or a function `(request, index) => step` (request:
// the parsed body); steps are used in order, one per main-conversation request, and
// when the script runs out the last step repeats. Step fields:
//   text          assistant text (sent in `chunks` deltas, default 1)
//   toolUse       { name, input, id? } or a list of them; stop_reason becomes tool_use
//   usage         { input, output, cacheCreation, cacheRead } tokens to report
//                 (default: input 100, output 20, no cache)
//   delayMs       wait before answering; `chunkDelayMs` between text deltas
//   status        answer with this HTTP error instead (e.g. 429, 529, 500), with
//                 `retryAfter` seconds in a retry-after header when given
//   hang          never answer (the connection stays open until stop())
//
// Requests that are not the main conversation (Claude Code's side calls, which
// carry no tools) get a short text answer and do not consume a step.
//
// Each recorded request has `receivedAt`, the `performance.now()` of this process
// when its headers arrived, so a benchmark can time a CLI's start against it;
// `await model.waitForRequest(accept)` gives the first request (already recorded or
// still to come) that `accept` takes.
const http = require('node:http')
const { performance } = require('node:perf_hooks')

const DEFAULT_USAGE = { input: 100, output: 20, cacheCreation: 0, cacheRead: 0 }

class ScriptedModel {
  /** Starts a server on 127.0.0.1 (a free port). */
  static async start(script = [{ text: 'OK' }]) {
    const model = new ScriptedModel(script)
    await new Promise((resolve, reject) => {
      model.server.once('error', reject)
      model.server.listen(0, '127.0.0.1', resolve)
    })
    model.port = model.server.address().port
    model.url = `http://127.0.0.1:${model.port}`
    return model
  }

  constructor(script) {
    this.script = Array.isArray(script) ? script : [script]
    /** Every request: { method, path, headers, body } (body parsed when JSON). */
    this.requests = []
    /** Tokens reported to the CLI in main-conversation answers. */
    this.tokens = { input: 0, output: 0, cacheCreation: 0, cacheRead: 0 }
    this.step = 0
    this.sockets = new Set()
    /** Pending waitForRequest calls: { accept, resolve }. */
    this.waiters = []
    this.server = http.createServer((req, res) => this.#handle(req, res))
    this.server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
  }

  /** The requests of the main conversation (those offering tools). */
  get conversation() {
    return this.requests.filter((r) => r.path.startsWith('/v1/messages') && isMain(r.body))
  }

  /** The first request `accept` takes, among those recorded and those to come. */
  waitForRequest(accept = () => true) {
    const seen = this.requests.find(accept)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve) => this.waiters.push({ accept, resolve }))
  }

  /** Environment for a Claude Code process that talks to this server. */
  env(configDir) {
    return {
      ANTHROPIC_BASE_URL: this.url,
      ANTHROPIC_API_KEY: 'sk-ant-test-scripted',
      CLAUDE_CONFIG_DIR: configDir,
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
    }
  }

  async stop() {
    for (const socket of this.sockets) socket.destroy()
    await new Promise((resolve) => this.server.close(() => resolve()))
  }

  #handle(req, res) {
    const receivedAt = performance.now()
    let raw = ''
    req.setEncoding('utf8')
    req.on('data', (d) => (raw += d))
    req.on('end', () => {
      let body = raw
      try {
        body = raw ? JSON.parse(raw) : undefined
      } catch {}
      const url = new URL(req.url, 'http://x')
      const request = { method: req.method, path: url.pathname, headers: req.headers, body, receivedAt }
      this.requests.push(request)
      this.waiters = this.waiters.filter((w) => {
        if (!w.accept(request)) return true
        w.resolve(request)
        return false
      })
      if (req.method !== 'POST' || url.pathname !== '/v1/messages') {
        res.writeHead(404, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'not scripted' } }))
        return
      }
      if (!isMain(body)) {
        this.#answer(res, { text: 'OK', usage: { input: 1, output: 1 } }, false)
        return
      }
      const index = this.step++
      let step = this.script[Math.min(index, this.script.length - 1)]
      if (typeof step === 'function') step = step(body, index)
      this.#answer(res, step, true)
    })
  }

  #answer(res, step, counted) {
    if (step.hang) return
    const send = () => {
      if (step.status) {
        const headers = { 'content-type': 'application/json' }
        if (step.retryAfter !== undefined) headers['retry-after'] = String(step.retryAfter)
        res.writeHead(step.status, headers)
        const type = step.status === 429 ? 'rate_limit_error' : step.status === 529 ? 'overloaded_error' : 'api_error'
        res.end(JSON.stringify({ type: 'error', error: { type, message: `scripted ${step.status}` } }))
        return
      }
      const usage = { ...DEFAULT_USAGE, ...step.usage }
      if (counted) {
        for (const key of Object.keys(this.tokens)) this.tokens[key] += usage[key]
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      this.#stream(res, step, usage)
    }
    if (step.delayMs) setTimeout(send, step.delayMs)
    else send()
  }

  async #stream(res, step, usage) {
    const event = (type, data) => {
      if (!res.destroyed) res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`)
    }
    const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
    const id = `msg_scripted_${Date.now()}_${Math.random().toString(36).slice(2, 10)}`
    event('message_start', {
      message: {
        id,
        type: 'message',
        role: 'assistant',
        model: 'claude-sonnet-4-5',
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: {
          input_tokens: usage.input,
          output_tokens: 1,
          cache_creation_input_tokens: usage.cacheCreation,
          cache_read_input_tokens: usage.cacheRead,
        },
      },
    })
    let index = 0
    if (step.text !== undefined) {
      event('content_block_start', { index, content_block: { type: 'text', text: '' } })
      const parts = splitText(step.text, step.chunks ?? 1)
      for (const text of parts) {
        if (step.chunkDelayMs) await pause(step.chunkDelayMs)
        event('content_block_delta', { index, delta: { type: 'text_delta', text } })
      }
      event('content_block_stop', { index })
      index++
    }
    const tools = step.toolUse ? [].concat(step.toolUse) : []
    for (const tool of tools) {
      const toolId = tool.id ?? `toolu_scripted_${Math.random().toString(36).slice(2, 12)}`
      event('content_block_start', { index, content_block: { type: 'tool_use', id: toolId, name: tool.name, input: {} } })
      event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(tool.input) } })
      event('content_block_stop', { index })
      index++
    }
    event('message_delta', {
      delta: { stop_reason: tools.length ? 'tool_use' : 'end_turn', stop_sequence: null },
      usage: { output_tokens: usage.output },
    })
    event('message_stop', {})
    res.end()
  }
}

/** The main conversation offers tools; Claude Code's side calls do not. */
function isMain(body) {
  return Boolean(body && Array.isArray(body.tools) && body.tools.length > 0)
}

function splitText(text, parts) {
  if (parts <= 1 || text.length < parts) return [text]
  const size = Math.ceil(text.length / parts)
  const out = []
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size))
  return out
}

module.exports = { ScriptedModel }
