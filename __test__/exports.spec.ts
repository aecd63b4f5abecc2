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

  it.each([
    ['SessionPool', 'session-pool', SessionPool, PoolDefault, PoolNamed],
    ['SessionRecoveryManager', 'session-recovery', SessionRecoveryManager, RecoveryDefault, RecoveryNamed],
  ])('has %s at the root and as the %s subpath default', (_, subpath, root, subpathDefault, subpathNamed) => {
    expect(typeof root).toBe('function')
    expect(subpathDefault).toBe(root)
    expect(subpathNamed).toBe(root)
    const pkg = require('../package.json')
    // Each condition carries its own types, so that an ES module consumer gets the
    // ES module declarations (.d.mts) and a CommonJS one the CommonJS ones.
    expect(pkg.exports[`./${subpath}`]).toEqual({
      import: { types: `./lib/${subpath}.d.mts`, default: `./lib/${subpath}.mjs` },
      require: { types: `./lib/${subpath}.d.ts`, default: `./lib/${subpath}.js` },
    })
    expect(pkg.typesVersions['*'][subpath]).toEqual([`lib/${subpath}.d.ts`])
  })

  it('resolves through the package exports map, for require and import', async () => {
    const root = require.resolve('..')
    expect(require(root).default).toBe(ClaudeSessionSpawner)
    const viaName = require('node:module').createRequire(__filename)
    const pkg = viaName('../package.json')
    expect(pkg.exports['./claude-session-spawner'].require.default).toBe('./lib/claude-session-spawner.js')
    expect(pkg.exports['.'].require.types).toBe('./index.d.ts')
    expect(pkg.exports['.'].import.types).toBe('./index.d.mts')
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
