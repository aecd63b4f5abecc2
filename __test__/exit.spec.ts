// Node exits by itself: event delivery does not hold the loop, running sessions do
// (as child processes do), and process.exit() takes the sessions' processes along.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { FAKE_AGENT, alive, groupMembers, runNode, tempDir, until, within } from './support'

const LIB = path.join(__dirname, '..', 'lib', 'index.js')

function runScript(body: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const dir = tempDir()
  const script = path.join(dir, 'script.js')
  fs.writeFileSync(
    script,
    `const ClaudeSessionSpawner = require(${JSON.stringify(LIB)}).default
const AGENT = ${JSON.stringify(FAKE_AGENT)}
const DIR = ${JSON.stringify(dir)}
const config = {
  workingDirectory: DIR,
  charter: { identity: { name: 'n', email: 'e', role: 'r' }, objectives: [], constraints: { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] }, resources: { maxTokens: 0, maxExecutionTime: 0, allowedTools: [] } },
  taskContext: { taskId: 't', description: 'd', priority: 'low' },
  memory: { recentActions: [], conversationHistory: [], preferences: {}, projectContext: {} },
}
${body}
`,
  )
  return runNode(script).then(({ code, stdout, stderr }) => ({ code, stdout, stderr }))
}

describe('the host process', () => {
  it('exits by itself with an idle spawner', async () => {
    const run = await within(runScript(`new ClaudeSessionSpawner({ claudePath: AGENT }); console.log('constructed')`), 'script exit')
    expect(run).toEqual({ code: 0, stdout: 'constructed\n', stderr: '' })
  })

  it('stays alive while a session runs, then exits by itself', async () => {
    const run = await within(
      runScript(`
const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['sleep:300', 'out:late output'] })
spawner.on('session-output', ({ data }) => process.stdout.write('output: ' + data))
spawner.on('session-ended', ({ status }) => console.log('ended: ' + status.state))
// Nothing awaits the completion: only the running session keeps Node alive.
spawner.spawnSession(config)
`),
      'script exit',
    )
    expect(run).toEqual({ code: 0, stdout: 'output: late output\nended: completed\n', stderr: '' })
  })

  it('a pool stays alive until every request has been reported, then exits by itself', async () => {
    // Sessions end on the pool's worker faster than JavaScript takes their completion
    // events: hundreds are still queued when the pool goes idle. Node must wait for
    // them (it once exited with a third of them delivered), with no timer of ours.
    const run = await within(
      runScript(`
const { SessionPool } = require(${JSON.stringify(LIB)})
const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['exit:0'] })
const pool = new SessionPool(spawner, { maxConcurrentSessions: 8, defaultSessionTimeout: 0, maxQueueSize: 1000 })
let completed = 0
process.on('exit', () => console.log('completed ' + completed))
for (let i = 0; i < 400; i++) {
  pool.requestSession({ requestId: 'r' + i, priority: 'low', queuedAt: new Date(), config, onCompleted: () => completed++, onFailed: (e) => console.log('failed ' + e.message) })
}
`),
      'script exit',
    )
    expect(run).toEqual({ code: 0, stdout: 'completed 400\n', stderr: '' })
  })

  it('process.exit() while sessions stream output: no crash, and their processes are stopped', async () => {
    const run = await within(
      runScript(`
const spawner = new ClaudeSessionSpawner({ claudePath: AGENT, protocol: 'text', extraArgs: ['spawn-sleepers:2', 'flood-out:100000000', 'hang'] })
let seen = 0
spawner.on('session-output', ({ data }) => {
  seen += data.length
  if (seen > 1000000) {
    console.log(JSON.stringify(spawner.getActiveSessions().map((s) => s.pid)))
    process.exit(0)
  }
})
spawner.spawnSession(config)
spawner.spawnSession(config)
`),
      'script exit',
    )
    expect(run.code).toBe(0)
    expect(run.stderr).toBe('')
    const pgids: number[] = JSON.parse(run.stdout)
    expect(pgids).toHaveLength(2)
    // SIGKILL was sent as Node exited; the kernel finishes them off right after.
    for (const pgid of pgids) {
      await until(`group ${pgid} to be gone`, () => !alive(pgid) && groupMembers(pgid).length === 0, 5000)
    }
  })
})
