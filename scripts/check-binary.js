#!/usr/bin/env node
'use strict'
// Checks a built addon before it is packed or published:
//   - a linux-gnu binary needs no glibc newer than the floor the README promises
//     (GLIBC_FLOOR, 2.17: what `npm run build:target` links against through zig);
//   - and it references no C library function without a version: linked against old
//     glibc, such a reference is one the old glibc does not have (a wrapper added later,
//     e.g. gettid in 2.30), and loading fails with "undefined symbol" on old systems;
//   - a linux-musl binary references no glibc at all;
//   - an ELF binary is stripped (no .symtab; the release profile strips symbols).
// Reads the ELF file itself (no binutils needed, so it also runs in slim containers).
//
//   node scripts/check-binary.js native/claude-session-spawner.linux-x64-gnu.node
const fs = require('node:fs')
const path = require('node:path')

/** The oldest glibc the linux-gnu binaries load on; `build:target` links against it. */
const GLIBC_FLOOR = [2, 17]

function compare(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] || 0) - (b[i] || 0)
    if (d !== 0) return d
  }
  return 0
}

// Node-API and libuv come from the node process, not from a library.
const FROM_NODE = /^(napi_|node_api_|uv_)/

/** The dynamic symbols (64-bit little-endian ELF: x86_64, aarch64), with their versions. */
function dynamicSymbols(bytes) {
  const sections = []
  const shoff = Number(bytes.readBigUInt64LE(0x28))
  const shentsize = bytes.readUInt16LE(0x3a)
  for (let i = 0; i < bytes.readUInt16LE(0x3c); i++) {
    const at = shoff + i * shentsize
    sections.push({
      type: bytes.readUInt32LE(at + 4),
      offset: Number(bytes.readBigUInt64LE(at + 0x18)),
      size: Number(bytes.readBigUInt64LE(at + 0x20)),
      link: bytes.readUInt32LE(at + 0x28),
    })
  }
  const dynsym = sections.find((s) => s.type === 11 /* SHT_DYNSYM */)
  const versym = sections.find((s) => s.type === 0x6fffffff /* SHT_GNU_versym */)
  if (!dynsym) return []
  const strtab = sections[dynsym.link]
  const symbols = []
  for (let i = 1; i < dynsym.size / 24; i++) {
    const at = dynsym.offset + i * 24
    const nameAt = strtab.offset + bytes.readUInt32LE(at)
    symbols.push({
      name: bytes.toString('latin1', nameAt, bytes.indexOf(0, nameAt)),
      weak: bytes[at + 4] >> 4 === 2 /* STB_WEAK */,
      undefined: bytes.readUInt16LE(at + 6) === 0 /* SHN_UNDEF */,
      // Index 0 (local) and 1 (global) name no version.
      versioned: versym ? (bytes.readUInt16LE(versym.offset + i * 2) & 0x7fff) > 1 : false,
    })
  }
  return symbols
}

function check(file) {
  const bytes = fs.readFileSync(file)
  const name = path.basename(file)
  const problems = []
  const facts = [`${(bytes.length / 1024 / 1024).toFixed(1)} MiB`]
  const elf = bytes.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))
  if (elf) {
    const text = bytes.toString('latin1')
    const versions = [...new Set(text.match(/GLIBC_\d+\.\d+(\.\d+)?/g) || [])]
      .map((v) => v.slice('GLIBC_'.length).split('.').map(Number))
      .sort(compare)
    const highest = versions.at(-1)
    if (name.includes('-musl.')) {
      facts.push('musl')
      if (highest) problems.push(`a musl binary references glibc (GLIBC_${highest.join('.')})`)
    } else if (name.includes('-gnu.')) {
      facts.push(`needs glibc ${highest ? highest.join('.') : '(none)'}`)
      if (highest && compare(highest, GLIBC_FLOOR) > 0) {
        problems.push(`needs GLIBC_${highest.join('.')}, newer than the floor ${GLIBC_FLOOR.join('.')}`)
      }
      const unversioned = dynamicSymbols(bytes)
        .filter((s) => s.undefined && !s.weak && !s.versioned && !FROM_NODE.test(s.name))
        .map((s) => s.name)
      if (unversioned.length > 0) {
        problems.push(`references ${unversioned.join(', ')} without a glibc version: not in glibc ${GLIBC_FLOOR.join('.')}`)
      }
    }
    const stripped = !text.includes('\0.symtab\0')
    facts.push(stripped ? 'stripped' : 'not stripped')
    if (!stripped) problems.push('has a symbol table (.symtab): build with the release profile, which strips symbols')
  } else {
    facts.push('not ELF (Mach-O is not checked for glibc)')
  }
  console.log(`${name}: ${facts.join(', ')}`)
  for (const problem of problems) console.error(`${name}: ${problem}`)
  return problems.length === 0
}

module.exports = { GLIBC_FLOOR }

if (require.main === module) {
  const files = process.argv.slice(2)
  if (files.length === 0) {
    console.error('usage: node scripts/check-binary.js <file.node>...')
    process.exit(2)
  }
  process.exit(files.map(check).every(Boolean) ? 0 : 1)
}
