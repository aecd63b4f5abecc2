'use strict'
// Loads the compiled addon through the loader `napi build` generates (it picks the
// file or per-platform package for this machine).
let binding
try {
  binding = require('../native/binding.js')
} catch (error) {
  const hint = new Error(
    'claude-session-spawner: the native addon is not built or not installed for this platform ' +
      `(${process.platform}-${process.arch}). In a checkout, run \`npm run build\`.`,
  )
  hint.cause = error
  throw hint
}
module.exports = binding
