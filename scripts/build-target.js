#!/usr/bin/env node
'use strict'
// `npm run build:target -- <rust target triple>`: the release addon for one declared
// platform, built the way the published binary is, into
// native/claude-session-spawner.<platform>.node.
//
//   linux gnu   cargo-zigbuild (`napi build -x`) linking against glibc GLIBC_FLOOR, so the
//               binary loads on any distribution with that glibc or newer
//   linux musl  cargo-zigbuild, for Alpine and other musl distributions
//   macOS       Apple's toolchain on a Mac (both architectures from either)
//
// Linux builds need zig and cargo-zigbuild (`pip install -r scripts/zig-requirements.txt`)
// and the Rust target (`rustup target add <triple>`). The
// symbols are stripped by the release profile (Cargo.toml).
const { spawnSync } = require('node:child_process')

const { platformOfTarget } = require('../native/platform.js')
const { napi } = require('../package.json')
const { GLIBC_FLOOR } = require('./check-binary.js')

function fail(message) {
  console.error(`build:target: ${message}`)
  process.exit(1)
}

function have(command, args = ['--version']) {
  const result = spawnSync(command, args, { stdio: 'ignore' })
  return !result.error && result.status === 0
}

const triple = process.argv[2]
if (!triple || !napi.targets.includes(triple)) {
  fail(`usage: npm run build:target -- <target>, one of: ${napi.targets.join(', ')}`)
}
const platform = platformOfTarget(triple)
const args = ['build', '--platform', '--release', '--features', 'napi,redis', '--output-dir', 'native', '--no-js', '--dts', 'binding.d.ts']

if (triple.includes('-linux-')) {
  // cargo-zigbuild finds zig on PATH or as the `ziglang` Python package.
  const zig = have('zig', ['version']) || have('python3', ['-m', 'ziglang', 'version'])
  if (!zig || !have('cargo-zigbuild')) {
    fail('linux builds link through zig: `pip install -r scripts/zig-requirements.txt`')
  }
  // zig picks the glibc version from the target's suffix; napi hands it to cargo-zigbuild.
  args.push('-x', '--target', triple.endsWith('-gnu') ? `${triple}.${GLIBC_FLOOR.join('.')}` : triple)
} else if (triple.includes('-apple-darwin')) {
  if (process.platform !== 'darwin') fail(`${triple} is built on macOS (Apple's linker and SDK)`)
  args.push('--target', triple)
} else {
  fail(`no build recipe for ${triple}`)
}

console.log(`build:target: napi ${args.join(' ')}`)
const napiCli = require.resolve('@napi-rs/cli/package.json').replace(/package\.json$/, 'dist/cli.js')
const result = spawnSync(process.execPath, [napiCli, ...args], { stdio: 'inherit' })
if (result.status !== 0) fail(`napi build failed for ${triple}`)
console.log(`build:target: native/claude-session-spawner.${platform}.node`)
