#!/usr/bin/env node
'use strict'
// `npm run release:publish`: the release workflow's last step, after `npm run artifacts`
// has put each platform's binary into npm/<platform>/. Refuses to publish anything
// unless every declared platform has its binary, the npm/ packages are at the main
// package's version, and (in GitHub Actions) the tag and the repository match the
// manifest. Then `npm publish` of the main package, whose prepublishOnly
// (`napi prepublish -t npm`) publishes the platform packages first and adds them to
// the main package's optionalDependencies.
//
//   NPM_TAG   dist-tag: `latest` for a release, `next` for a prerelease (default: `next`
//             when the version has a prerelease part, else `latest`)
//   DRY_RUN=1 check everything, then `npm publish --dry-run --ignore-scripts`
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const { platformOfTarget } = require('../native/platform.js')

const root = path.join(__dirname, '..')
const main = require('../package.json')
const problems = []

for (const platform of main.napi.targets.map(platformOfTarget)) {
  const dir = path.join(root, 'npm', platform)
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  if (manifest.version !== main.version) {
    problems.push(`npm/${platform} is at ${manifest.version}, the main package at ${main.version} (run \`npm run version\`)`)
  }
  if (!fs.existsSync(path.join(dir, manifest.main))) problems.push(`npm/${platform} has no ${manifest.main}`)
}

const { GITHUB_REF, GITHUB_REPOSITORY } = process.env
if (GITHUB_REF && GITHUB_REF.startsWith('refs/tags/') && GITHUB_REF !== `refs/tags/v${main.version}`) {
  problems.push(`the tag ${GITHUB_REF.slice('refs/tags/'.length)} is not v${main.version}`)
}
// npm's provenance check needs the manifest's repository to be the one that builds it.
if (GITHUB_REPOSITORY && !main.repository.url.includes(`github.com/${GITHUB_REPOSITORY}.git`)) {
  problems.push(`package.json's repository (${main.repository.url}) is not github.com/${GITHUB_REPOSITORY}`)
}

if (problems.length > 0) {
  for (const problem of problems) console.error(`release:publish: ${problem}`)
  process.exit(1)
}

const tag = process.env.NPM_TAG || (main.version.includes('-') ? 'next' : 'latest')
const args = ['publish', '--access', 'public', '--tag', tag]
// A dry run must not reach prepublishOnly either: napi would publish the platform packages.
if (process.env.DRY_RUN === '1') args.push('--dry-run', '--ignore-scripts')
else args.push('--provenance')
console.log(`release:publish: npm ${args.join(' ')}`)
// The platform packages are published by prepublishOnly's `npm publish` calls, which
// take provenance from the environment.
execFileSync('npm', args, { cwd: root, stdio: 'inherit', env: { ...process.env, npm_config_provenance: String(process.env.DRY_RUN !== '1') } })
