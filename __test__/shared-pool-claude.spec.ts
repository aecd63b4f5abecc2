// End to end on a shared queue: a real Claude Code session runs on one host, the
// host is SIGKILLed mid-task, and once its lease lapses another host takes the
// request over and continues the same conversation (its transcript is reachable
// from there), telling the model why.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { CLAUDE, E2E_MS, claudeConfig, scripted } from './claude'
import { until, within } from './support'

const { RedisServer } = require('../test-support/redis-server')
const { Host, watchQueue } = require('../test-support/hosts')

jest.setTimeout(4 * E2E_MS)

const TAKEN_OVER = 'This task was started on host'

let redis: any
beforeAll(async () => {
  redis = await RedisServer.start()
})
afterAll(async () => {
  await redis?.stop()
})

const hosts: any[] = []
afterEach(async () => {
  for (const h of hosts.splice(0)) await within(h.stop(), `host ${h.name} to exit`).catch(() => h.kill())
})

function host(name: string, queueName: string) {
  const h = new Host({ url: redis.url, name: queueName, host: name, capacity: 1, leaseMs: 2000, pollIntervalMs: 200, spawner: { claudePath: CLAUDE } })
  hosts.push(h)
  return h.waitFor('ready', (m: any) => m.ev === 'ready').then(() => h)
}

function transcriptHolds(configDir: string, id: string, text: string): boolean {
  const projects = path.join(configDir, 'projects')
  if (!fs.existsSync(projects)) return false
  return fs.readdirSync(projects).some((d) => {
    const file = path.join(projects, d, `${id}.jsonl`)
    return fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(text)
  })
}

test('a host killed mid-task: another host resumes the Claude Code conversation after the lease lapses', async () => {
  const queueName = `claude-${process.pid}`
  const watcher = await watchQueue(redis.url, queueName)
  const model = await scripted([
    { toolUse: { name: 'Bash', input: { command: 'echo step-one > one.txt', description: 'first step' } } },
    { hang: true },
    { text: 'Picked up on the new host; all done.' },
  ])
  const config = claudeConfig(model)
  const configDir = config.environmentVariables!.CLAUDE_CONFIG_DIR

  const first = await host('first', queueName)
  first.send({ op: 'request', requestId: 'task', priority: 'high', config })
  await watcher.until('the task to start on the first host', () => watcher.events.some((e: any) => e.name === 'started' && e.host === 'first'), E2E_MS)
  const conversation = JSON.parse(watcher.events.find((e: any) => e.name === 'started').detail).claudeSessionId
  expect(conversation).toMatch(/^[0-9a-f-]{36}$/)
  await until('the second model request (the command ran)', () => model.conversation.length >= 2, E2E_MS)
  await until('the transcript to hold the command and its result', () => transcriptHolds(configDir, conversation, 'tool_result'), E2E_MS)
  expect(fs.readFileSync(path.join(config.workingDirectory, 'one.txt'), 'utf8')).toBe('step-one\n')

  await host('second', queueName)
  await first.kill()

  await watcher.until('the task to complete', () => watcher.events.some((e: any) => e.name === 'completed' && e.id === 'task'), 2 * E2E_MS)
  const completed = watcher.events.find((e: any) => e.name === 'completed')
  expect(completed.host).toBe('second')
  const { status } = JSON.parse(completed.detail)
  expect(status.state).toBe('completed')
  // The same conversation, continued (--resume), with the note of what happened.
  expect(status.claudeSessionId).toBe(conversation)
  const again = watcher.events.filter((e: any) => e.name === 'started').map((e: any) => ({ host: e.host, attempt: e.attempt, ...JSON.parse(e.detail) }))
  expect(again.map((s: any) => [s.host, s.attempt])).toEqual([
    ['first', 1],
    ['second', 2],
  ])
  expect(again[1]).toMatchObject({ resumed: true, note: `resumed conversation ${conversation} from host first`, claudeSessionId: conversation })
  expect(watcher.events.some((e: any) => e.name === 'requeued' && e.id === 'task' && e.attempt === 2)).toBe(true)
  const last = JSON.stringify(model.conversation.at(-1).body.messages)
  expect(last).toContain('echo step-one > one.txt')
  expect(last).toContain(`${TAKEN_OVER} first`)
  watcher.close()
})
