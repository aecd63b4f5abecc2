'use strict'
// Platform names as the platform packages spell them (`linux-x64-gnu`, `darwin-arm64`):
// for this machine, and for a Rust target triple of `napi.targets`. The loader, the
// release scripts and the tests all name platforms through here.
const { readFileSync } = require('node:fs')

const ARCH = { x86_64: 'x64', aarch64: 'arm64' }

/** `x86_64-unknown-linux-musl` -> `linux-x64-musl`, `aarch64-apple-darwin` -> `darwin-arm64`. */
function platformOfTarget(triple) {
  const [arch, , os, abi] = triple.split('-')
  const nodeArch = ARCH[arch] || arch
  return os === 'linux' ? `linux-${nodeArch}-${abi}` : `${os}-${nodeArch}`
}

// glibc or musl, as the platform packages' `libc` field says it: Node's own report
// names the glibc it runs on, and there is none on musl.
function libc() {
  try {
    if (readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return 'musl'
  } catch {}
  const header = process.report && process.report.getReport().header
  return header && header.glibcVersionRuntime ? 'gnu' : 'musl'
}

function hostPlatform() {
  return process.platform === 'linux' ? `linux-${process.arch}-${libc()}` : `${process.platform}-${process.arch}`
}

module.exports = { platformOfTarget, hostPlatform }
