'use strict'
// The compiled addon, found by the package's loader (native/loader.js: a build from
// source in a checkout, else the prebuilt platform package).
module.exports = require('../native/loader.js')
