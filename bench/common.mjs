// What the benchmark's driver (run.mjs) and its server processes (server.mjs) share.

/** Liveness timings of every bilateral node in the benchmark. */
export const TIMINGS = { pingInterval: 1000, peerTimeout: 10_000, joinInterval: 200 }

/** The work of every call: sum and difference. */
export const sumDiff = (a) => ({ S: a.A + a.B, D: a.A - a.B })

/** Throws unless a call got at least one result and every one is a reply. */
export function firstOk(results) {
  if (results.length === 0 || !results.every((r) => r.ok)) throw new Error(`call failed: ${JSON.stringify(results).slice(0, 300)}`)
}
