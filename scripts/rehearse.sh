#!/usr/bin/env bash
# Release rehearsal: what `npm install claude-session-spawner` gives a daemon developer,
# made from this checkout the way the release workflow makes it, and tried the way they
# would try it. `npm run rehearse`; `.ci/run` runs it as the last step of `npm test`.
#
#  1. The host's binary, built by `npm run build:target` (linux-gnu against glibc 2.17),
#     or the one already in native/ with REHEARSE_PREBUILT=1 (the workflow's test jobs);
#     checked by scripts/check-binary.js (glibc floor, stripped).
#  2. The main package packed from the files a clean clone has (tracked and not ignored),
#     with the optionalDependencies `napi prepublish` adds; it must hold its loader and
#     no binary, and arethetypeswrong must find no problem in it. The platform package
#     packed from npm/<platform> with the binary; every npm/ package at the same version.
#  3. Both published to a throwaway verdaccio on 127.0.0.1 (no uplink: nothing reaches
#     or comes from another registry), installed into a fresh project by name, with no
#     cargo or rustc on PATH.
#  4. There: `require` and `import` of the root and each subpath; `tsc --strict` of a
#     consumer under node10, node16 CommonJS, node16 ES module ("type": "module") and
#     bundler resolution; one real Claude Code session (the consumer's own install of
#     @anthropic-ai/claude-code) against the scripted model server.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/css-rehearsal.XXXXXX")"
TOOLS="${REHEARSAL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-session-spawner/rehearsal-tools}"
VERDACCIO_VERSION=6.8.0
# The consumer installs Claude Code itself, as the README tells users to: the newest
# release checked (the Jest suite runs the pinned devDependency, the oldest in the range).
CLAUDE_CODE_VERSION="${REHEARSAL_CLAUDE_CODE:-2.1.332}"
REGISTRY_PID=""
cleanup() {
  if [ -n "$REGISTRY_PID" ]; then kill "$REGISTRY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== rehearsal: %s\n' "$*"; }
fail() { printf 'rehearsal FAILED: %s\n' "$*" >&2; exit 1; }

cd "$ROOT"
NAME="$(node -p "require('./package.json').name")"
VERSION="$(node -p "require('./package.json').version")"
PLATFORM="$(node -p "require('./native/platform.js').hostPlatform()")"
TRIPLE="$(node -p "require('./package.json').napi.targets.find((t) => require('./native/platform.js').platformOfTarget(t) === '$PLATFORM') || ''")"
[ -n "$TRIPLE" ] || fail "this machine ($PLATFORM) is not one of napi.targets"
BINARY="native/$NAME.$PLATFORM.node"

step "1. the $PLATFORM binary ($TRIPLE)"
if [ "${REHEARSE_PREBUILT:-}" = 1 ]; then
  [ -f "$BINARY" ] || fail "REHEARSE_PREBUILT=1 but $BINARY is missing"
else
  npm run --silent build:target -- "$TRIPLE"
fi
node scripts/check-binary.js "$BINARY"

step "2. pack the main package (from a clean clone's files) and $NAME-$PLATFORM"
node -e '
  const fs = require("node:fs"); const path = require("node:path")
  const { platformOfTarget } = require("./native/platform.js")
  const main = require("./package.json")
  const dirs = fs.readdirSync("npm").sort()
  const wanted = main.napi.targets.map(platformOfTarget).sort()
  if (dirs.join() !== wanted.join()) throw new Error(`npm/ has ${dirs} but napi.targets are ${wanted}`)
  for (const dir of dirs) {
    const p = require(path.resolve("npm", dir, "package.json"))
    if (p.name !== `${main.name}-${dir}` || p.version !== main.version)
      throw new Error(`npm/${dir} is ${p.name}@${p.version}, expected ${main.name}-${dir}@${main.version} (run \`napi version\`)`)
  }
  console.log(`npm/: ${dirs.length} platform packages at ${main.version}, one per target`)'
mkdir -p "$WORK/main" "$WORK/platform" "$WORK/tarballs"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$WORK/main"
cp -R "npm/$PLATFORM/." "$WORK/platform/"
cp "$BINARY" "$WORK/platform/"
# What `napi prepublish` does to the manifests before publishing; publishConfig goes so
# that nothing here can publish anywhere but the throwaway registry.
node -e '
  const fs = require("node:fs")
  const { platformOfTarget } = require(process.argv[1] + "/native/platform.js")
  const edit = (file, change) => { const p = JSON.parse(fs.readFileSync(file)); change(p); fs.writeFileSync(file, JSON.stringify(p, null, 2)) }
  edit(process.argv[2] + "/package.json", (p) => {
    p.optionalDependencies = Object.fromEntries(p.napi.targets.map((t) => [`${p.name}-${platformOfTarget(t)}`, p.version]))
    delete p.publishConfig
  })
  edit(process.argv[3] + "/package.json", (p) => delete p.publishConfig)' "$ROOT" "$WORK/main" "$WORK/platform"
(cd "$WORK/main" && npm pack --silent --pack-destination "$WORK/tarballs" >/dev/null)
(cd "$WORK/platform" && npm pack --silent --pack-destination "$WORK/tarballs" >/dev/null)
MAIN_TGZ="$WORK/tarballs/$NAME-$VERSION.tgz"
PLATFORM_TGZ="$WORK/tarballs/$NAME-$PLATFORM-$VERSION.tgz"
tar -tzf "$MAIN_TGZ" > "$WORK/main.list"
for f in package/native/loader.js package/native/platform.js package/index.d.ts package/index.d.mts package/lib/index.mjs package/LICENSE; do
  grep -qx "$f" "$WORK/main.list" || fail "the main tarball lacks $f"
done
if grep -q '\.node$' "$WORK/main.list"; then fail "the main tarball ships a binary"; fi
[ "$(tar -tzf "$PLATFORM_TGZ" | grep -c '\.node$')" = 1 ] || fail "the platform tarball must hold exactly one binary"
echo "main: $(wc -l < "$WORK/main.list") files, loader included, no binary; platform: $(du -h "$PLATFORM_TGZ" | cut -f1)"
"$ROOT/node_modules/.bin/attw" --format table-flipped "$MAIN_TGZ"

step "3. publish to a throwaway registry, install into a fresh project without cargo"
if [ ! -x "$TOOLS/node_modules/.bin/verdaccio" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "verdaccio@$VERDACCIO_VERSION"
fi
PORT="$(node -e "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close() })")"
URL="http://127.0.0.1:$PORT/"
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yaml" <<EOF
storage: $WORK/registry/storage
auth:
  htpasswd:
    file: $WORK/registry/htpasswd
uplinks: {}
packages:
  '**':
    access: \$all
    publish: \$authenticated
log: { type: stdout, format: pretty, level: warn }
EOF
"$TOOLS/node_modules/.bin/verdaccio" --config "$WORK/registry/config.yaml" --listen "127.0.0.1:$PORT" > "$WORK/registry/log" 2>&1 &
REGISTRY_PID=$!
TOKEN="$(node -e '
  const url = process.argv[1]
  const deadline = Date.now() + 60000
  ;(async () => {
    for (;;) {
      try {
        const res = await fetch(url + "-/user/org.couchdb.user:rehearsal", {
          method: "PUT", headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: "rehearsal", password: "rehearsal-only" }),
        })
        if (res.ok) return console.log((await res.json()).token)
        throw new Error(`HTTP ${res.status}: ${await res.text()}`)
      } catch (error) {
        if (Date.now() > deadline) { console.error(`verdaccio did not come up: ${error.message}`); process.exit(1) }
        await new Promise((r) => setTimeout(r, 200))
      }
    }
  })()' "$URL")" || { cat "$WORK/registry/log" >&2; fail "no registry"; }
NPMRC="$WORK/npmrc"
printf 'registry=%s\n//127.0.0.1:%s/:_authToken=%s\n' "$URL" "$PORT" "$TOKEN" > "$NPMRC"
npm publish --silent --userconfig "$NPMRC" --registry "$URL" --ignore-scripts "$PLATFORM_TGZ"
npm publish --silent --userconfig "$NPMRC" --registry "$URL" --ignore-scripts "$MAIN_TGZ"

CONSUMER="$WORK/consumer"
mkdir -p "$CONSUMER"
cp scripts/rehearsal/* "$CONSUMER/"
printf '{ "name": "rehearsal-consumer", "private": true, "type": "commonjs" }\n' > "$CONSUMER/package.json"
NO_CARGO_PATH=""
IFS=: read -r -a path_dirs <<< "$PATH"
for d in "${path_dirs[@]}"; do
  if [ -n "$d" ] && [ ! -e "$d/cargo" ] && [ ! -e "$d/rustc" ]; then NO_CARGO_PATH="${NO_CARGO_PATH:+$NO_CARGO_PATH:}$d"; fi
done
in_consumer() { (cd "$CONSUMER" && env PATH="$NO_CARGO_PATH" "$@"); }
if in_consumer sh -c 'command -v cargo || command -v rustc' >/dev/null; then fail "cargo is still on PATH"; fi
# Claude Code from the registry npm is configured with; everything else from verdaccio.
# (replace-registry-host: npm would otherwise fetch registry.npmjs.org tarballs from verdaccio.)
printf '@anthropic-ai:registry=%s\nreplace-registry-host=never\n' "$(npm config get registry)" >> "$NPMRC"
in_consumer npm install --no-audit --no-fund --userconfig "$NPMRC" "$NAME@$VERSION" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
installed="$(cd "$CONSUMER/node_modules" && ls -d "$NAME"*)"
echo "installed: $(echo "$installed" | tr '\n' ' ')"
[ "$installed" = "$(printf '%s\n%s' "$NAME" "$NAME-$PLATFORM")" ] || fail "expected $NAME and $NAME-$PLATFORM only"

step "4. use it: require, import, tsc --strict in four resolution modes, one Claude Code session"
in_consumer node require.cjs
in_consumer node import.mjs
TSC="$ROOT/node_modules/typescript/bin/tsc"
tsc_check() { # mode: module moduleResolution
  in_consumer node "$TSC" --strict --noEmit --skipLibCheck false --target es2022 --types node \
    --typeRoots "$ROOT/node_modules/@types" --module "$2" --moduleResolution "$3" consumer.ts \
    || fail "tsc under $1"
  echo "tsc --strict, $1: no error"
}
tsc_check "node10" commonjs node10
tsc_check "node16 (CommonJS)" node16 node16
printf '{ "name": "rehearsal-consumer", "private": true, "type": "module" }\n' > "$CONSUMER/package.json"
tsc_check "node16 (ES module, \"type\": \"module\")" node16 node16
tsc_check "bundler" esnext bundler
in_consumer env REHEARSAL_CLAUDE="$CONSUMER/node_modules/.bin/claude" \
  REHEARSAL_MODEL_SERVER="$ROOT/test-support/model-server.js" node session.mjs

step "passed: $NAME@$VERSION with $NAME-$PLATFORM installs and works without Rust"
