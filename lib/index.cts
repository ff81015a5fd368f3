/**
 * The CommonJS entry (`require('bilateral')`): the ES module itself, loaded
 * with Node's require() of ES modules (Node.js 20.19+ and 22.12+ do it by
 * default). Where require() cannot load an ES module, this says what to do
 * instead of Node's generic error.
 */
let loaded: unknown
try {
  loaded = require('./index.js')
} catch (error) {
  const code = (error as { code?: unknown } | null)?.code
  if (code !== 'ERR_REQUIRE_ESM' && code !== 'ERR_REQUIRE_ASYNC_MODULE') throw error
  throw new Error(
    `bilateral is an ES module, and this Node.js (${process.version}) cannot require() ES modules: ` +
      'use Node.js 20.19+ or 22.12+ (without --no-experimental-require-module), ' +
      "or load it with `const { Bilateral } = await import('bilateral')`",
    { cause: error },
  )
}
module.exports = loaded
