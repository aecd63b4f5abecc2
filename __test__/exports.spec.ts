// The package's shape: what the daemon imports, and from where.
import { EventEmitter } from 'node:events'

import ClaudeSessionSpawner, { ClaudeSessionSpawner as Named } from 'claude-session-spawner'
import SubpathDefault, { ClaudeSessionSpawner as SubpathNamed } from 'claude-session-spawner/claude-session-spawner'
import { SessionPool } from 'claude-session-spawner'
import PoolDefault, { SessionPool as PoolNamed } from 'claude-session-spawner/session-pool'
import { SessionRecoveryManager } from 'claude-session-spawner'
import RecoveryDefault, { SessionRecoveryManager as RecoveryNamed } from 'claude-session-spawner/session-recovery'

describe('exports', () => {
  it('has the spawner as default and named export, at the root and at the subpath', () => {
    expect(typeof ClaudeSessionSpawner).toBe('function')
    expect(Named).toBe(ClaudeSessionSpawner)
    expect(SubpathDefault).toBe(ClaudeSessionSpawner)
    expect(SubpathNamed).toBe(ClaudeSessionSpawner)
  })

  it('has SessionPool at the root and as the session-pool subpath default', () => {
    expect(typeof SessionPool).toBe('function')
    expect(PoolDefault).toBe(SessionPool)
    expect(PoolNamed).toBe(SessionPool)
    const pkg = require('../package.json')
    expect(pkg.exports['./session-pool']).toEqual({
      types: './lib/session-pool.d.ts',
      import: './lib/session-pool.mjs',
      require: './lib/session-pool.js',
    })
  })

  it('has SessionRecoveryManager at the root and as the session-recovery subpath default', () => {
    expect(typeof SessionRecoveryManager).toBe('function')
    expect(RecoveryDefault).toBe(SessionRecoveryManager)
    expect(RecoveryNamed).toBe(SessionRecoveryManager)
    const pkg = require('../package.json')
    expect(pkg.exports['./session-recovery']).toEqual({
      types: './lib/session-recovery.d.ts',
      import: './lib/session-recovery.mjs',
      require: './lib/session-recovery.js',
    })
    expect(pkg.typesVersions['*']['session-recovery']).toEqual(['lib/session-recovery.d.ts'])
  })

  it('resolves through the package exports map, for require and import', async () => {
    const root = require.resolve('..')
    expect(require(root).default).toBe(ClaudeSessionSpawner)
    const viaName = require('node:module').createRequire(__filename)
    const pkg = viaName('../package.json')
    expect(pkg.exports['./claude-session-spawner'].require).toBe('./lib/claude-session-spawner.js')
    expect(pkg.exports['.'].types).toBe('./index.d.ts')
  })

  it('is an EventEmitter with the usual methods', () => {
    const spawner = new ClaudeSessionSpawner({ protocol: 'text' })
    expect(spawner).toBeInstanceOf(EventEmitter)
    const seen: unknown[] = []
    const listener = (x: unknown) => seen.push(x)
    spawner.on('custom', listener)
    spawner.once('custom', listener)
    expect(spawner.listenerCount('custom')).toBe(2)
    expect(spawner.emit('custom', 1)).toBe(true)
    spawner.off('custom', listener)
    spawner.emit('custom', 2)
    spawner.removeAllListeners()
    expect(spawner.listenerCount('custom')).toBe(0)
    expect(seen).toEqual([1, 1])
  })

  it('defaults claudePath to $CLAUDE_PATH, else claude', () => {
    const saved = process.env.CLAUDE_PATH
    try {
      process.env.CLAUDE_PATH = '/opt/agents/claude'
      expect(new ClaudeSessionSpawner().claudePath).toBe('/opt/agents/claude')
      delete process.env.CLAUDE_PATH
      expect(new ClaudeSessionSpawner().claudePath).toBe('claude')
      expect(new ClaudeSessionSpawner({ claudePath: '/x/y' }).claudePath).toBe('/x/y')
    } finally {
      if (saved === undefined) delete process.env.CLAUDE_PATH
      else process.env.CLAUDE_PATH = saved
    }
  })

  it('loads in ESM through the import condition', async () => {
    const { execFileSync } = await import('node:child_process')
    const out = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "import S, { ClaudeSessionSpawner } from 'claude-session-spawner'; import P from 'claude-session-spawner/claude-session-spawner'; import Pool, { SessionPool } from 'claude-session-spawner/session-pool'; import { SessionPool as RootPool, SessionRecoveryManager as RootRecovery } from 'claude-session-spawner'; import Recovery from 'claude-session-spawner/session-recovery'; console.log(typeof S, S === ClaudeSessionSpawner, P === S, Pool === SessionPool && RootPool === Pool, typeof Recovery === 'function' && Recovery === RootRecovery)"],
      { cwd: require('node:path').join(__dirname, '..'), encoding: 'utf8' },
    )
    expect(out.trim()).toBe('function true true true true')
  })
})
