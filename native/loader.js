'use strict'
// Finds the compiled addon for this machine. A build from source (`npm run build` in a
// checkout) lies beside this file; an installed package gets the prebuilt binary from
// the platform package npm installed with it as an optional dependency
// (`claude-session-spawner-<platform>`, published from npm/<platform>/ at the same
// version). Only the platforms in `napi.targets` have one: the errors below name the
// package to install or say that this platform needs a build from source.
const { existsSync } = require('node:fs')
const { join } = require('node:path')
const { platformOfTarget, hostPlatform } = require('./platform.js')
const { name, version, napi } = require('../package.json')

const PREBUILT = napi.targets.map(platformOfTarget)

function loaderError(message, cause, code) {
  const error = new Error(`${name}: ${message}`, cause ? { cause } : undefined)
  error.code = code
  return error
}

function load() {
  const platform = hostPlatform()
  const local = join(__dirname, `${name}.${platform}.node`)
  if (existsSync(local)) return require(local)

  const fromSource =
    'To build it from source instead: install Rust (https://rustup.rs), run `npm install && npm run ' +
    'build` in a clone of the repository, and install the clone into your project (`npm install ' +
    '<path of the clone>`); see "Building from source" in the README.'
  if (!PREBUILT.includes(platform)) {
    throw loaderError(
      `there is no prebuilt binary for ${platform} (prebuilt: ${PREBUILT.join(', ')}). ${fromSource}`,
      undefined,
      'ERR_CLAUDE_SESSION_SPAWNER_UNSUPPORTED_PLATFORM',
    )
  }
  const packageName = `${name}-${platform}`
  let installed
  try {
    installed = require(`${packageName}/package.json`).version
  } catch (error) {
    throw loaderError(
      `the prebuilt binary for ${platform} is not installed. It comes in the package ` +
        `${packageName}@${version}, which npm installs as an optional dependency of ${name}. ` +
        `Install it with \`npm install ${packageName}@${version}\`; if optional dependencies ` +
        'were left out (--omit=optional, or a lockfile written on another platform), install again ' +
        `with them. ${fromSource}`,
      error,
      'ERR_CLAUDE_SESSION_SPAWNER_BINARY_MISSING',
    )
  }
  if (installed !== version) {
    throw loaderError(
      `${packageName} is at version ${installed}, but ${name} is at ${version}; the two must be ` +
        `the same. Install it with \`npm install ${packageName}@${version}\`.`,
      undefined,
      'ERR_CLAUDE_SESSION_SPAWNER_BINARY_MISMATCH',
    )
  }
  try {
    return require(packageName)
  } catch (error) {
    throw loaderError(
      `the prebuilt binary in ${packageName} could not be loaded on this machine ` +
        `(${error.message.split('\n')[0]}). ${fromSource}`,
      error,
      'ERR_CLAUDE_SESSION_SPAWNER_BINARY_LOAD',
    )
  }
}

module.exports = load()
