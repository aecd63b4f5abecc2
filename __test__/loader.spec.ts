// The addon loader (native/loader.js) as an installed package runs it: in a copy of the
// package with no build from source beside it, so the binary must come from the platform
// package. Each case runs in its own Node process, which reports what `require` threw.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { tempDir } from './support'

const ROOT = path.join(__dirname, '..')
const pkg = require('../package.json')

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { hostPlatform } = require('../native/platform.js')

const PLATFORM = hostPlatform()
const PLATFORM_PACKAGE = `claude-session-spawner-${PLATFORM}`
const BUILT = path.join(ROOT, 'native', `claude-session-spawner.${PLATFORM}.node`)

/** node_modules/claude-session-spawner with only what `files` ships of the loader. */
function installedCopy(): string {
  const project = tempDir()
  const main = path.join(project, 'node_modules', 'claude-session-spawner')
  fs.mkdirSync(path.join(main, 'native'), { recursive: true })
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(main, 'package.json'))
  for (const file of ['loader.js', 'platform.js']) {
    fs.copyFileSync(path.join(ROOT, 'native', file), path.join(main, 'native', file))
  }
  return project
}

function platformPackage(project: string, version: string, binary?: Buffer): void {
  const dir = path.join(project, 'node_modules', PLATFORM_PACKAGE)
  fs.mkdirSync(dir, { recursive: true })
  const main = `claude-session-spawner.${PLATFORM}.node`
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: PLATFORM_PACKAGE, version, main }))
  if (binary) fs.writeFileSync(path.join(dir, main), binary)
}

interface Outcome {
  code?: string
  message?: string
  exports?: string[]
}

function load(project: string, preload?: string): Outcome {
  const loader = JSON.stringify(path.join(project, 'node_modules', 'claude-session-spawner', 'native', 'loader.js'))
  const script =
    `try { console.log(JSON.stringify({ exports: Object.keys(require(${loader})) })) }` +
    ' catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }'
  const args = preload ? ['-e', `${preload}; ${script}`] : ['-e', script]
  return JSON.parse(execFileSync(process.execPath, args, { cwd: project, encoding: 'utf8' }))
}

describe('the addon loader of an installed package', () => {
  it('loads the binary from the platform package of the same version', () => {
    const project = installedCopy()
    platformPackage(project, pkg.version, fs.readFileSync(BUILT))
    expect(load(project).exports).toEqual(expect.arrayContaining(['NativeSpawner', 'NativePool']))
  })

  it('names the platform package and its version when it is not installed', () => {
    const outcome = load(installedCopy())
    expect(outcome.code).toBe('ERR_CLAUDE_SESSION_SPAWNER_BINARY_MISSING')
    expect(outcome.message).toContain(`the prebuilt binary for ${PLATFORM} is not installed`)
    expect(outcome.message).toContain(`npm install ${PLATFORM_PACKAGE}@${pkg.version}`)
    expect(outcome.message).toContain('To build it from source instead')
    expect(outcome.message).not.toMatch(/wasm|wasi|npm run build`\.$/)
  })

  it('refuses a platform package of another version', () => {
    const project = installedCopy()
    platformPackage(project, '0.0.1', fs.readFileSync(BUILT))
    const outcome = load(project)
    expect(outcome.code).toBe('ERR_CLAUDE_SESSION_SPAWNER_BINARY_MISMATCH')
    expect(outcome.message).toContain(`${PLATFORM_PACKAGE} is at version 0.0.1`)
  })

  it('says why a binary that is there does not load', () => {
    const project = installedCopy()
    platformPackage(project, pkg.version, Buffer.from('not an ELF or Mach-O file'))
    const outcome = load(project)
    expect(outcome.code).toBe('ERR_CLAUDE_SESSION_SPAWNER_BINARY_LOAD')
    expect(outcome.message).toContain(`the prebuilt binary in ${PLATFORM_PACKAGE} could not be loaded`)
  })

  it('lists the prebuilt platforms and the way from source on a platform without one', () => {
    const outcome = load(installedCopy(), "Object.defineProperty(process, 'platform', { value: 'freebsd' })")
    expect(outcome.code).toBe('ERR_CLAUDE_SESSION_SPAWNER_UNSUPPORTED_PLATFORM')
    expect(outcome.message).toContain(`there is no prebuilt binary for freebsd-${process.arch}`)
    for (const prebuilt of ['linux-x64-gnu', 'linux-arm64-musl', 'darwin-arm64']) {
      expect(outcome.message).toContain(prebuilt)
    }
    expect(outcome.message).toContain('https://rustup.rs')
  })
})
