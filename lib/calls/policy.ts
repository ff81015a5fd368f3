/**
 * When a call to several peers is done before every peer has answered: the
 * `until` option of `call()` and `stream()`. Pure functions of what has
 * arrived, so they are tested without sockets (spec/policy.spec.ts).
 */
import type { CallResult } from './results.js'

/**
 * `{ ok: k }`: done after `k` successful replies, or as soon as `k` can no
 * longer be reached. `'first-ok'`: `{ ok: 1 }`. A function: done when it
 * returns true for the results so far (in the order they settled). Without
 * `until`, a call waits for every peer.
 */
export type Until = { readonly ok: number } | 'first-ok' | ((results: readonly CallResult[]) => boolean)

/** What a policy looks at after each result. */
export interface Tally {
  /** Successful replies so far. */
  readonly ok: number
  /** Peers still to answer. */
  readonly pending: number
  /** Every result so far, in the order they settled (kept only for a predicate). */
  readonly results: readonly CallResult[]
}

/** A checked `until`: whether to stop now, and whether it needs the results kept. */
export interface Policy {
  /** Stop waiting: the condition is met, or (for a quorum) can no longer be. */
  done(tally: Tally): boolean
  /** Whether `done` reads `tally.results`. */
  readonly needsResults: boolean
}

/** The policy for `until`, or undefined to wait for every peer; a TypeError for anything else. */
export function policyFor(until: unknown): Policy | undefined {
  if (until === undefined) return undefined
  if (until === 'first-ok') return quorum(1)
  if (typeof until === 'function') {
    const met = until as (results: readonly CallResult[]) => unknown
    return { done: (t) => met(t.results) === true, needsResults: true }
  }
  if (until !== null && typeof until === 'object') {
    const k = (until as { ok?: unknown }).ok
    if (typeof k === 'number' && Number.isInteger(k) && k >= 1) return quorum(k)
  }
  throw new TypeError(`until must be { ok: k } (k an integer ≥ 1), 'first-ok' or a function of the results, got ${describe(until)}`)
}

/** `k` successful replies, or stop once so many can no longer arrive. */
export function quorum(k: number): Policy {
  return { done: (t) => t.ok >= k || t.ok + t.pending < k, needsResults: false }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value)
  if (value === null || typeof value !== 'object') return String(value)
  return Array.isArray(value) ? 'an array' : 'an object without a valid ok'
}
