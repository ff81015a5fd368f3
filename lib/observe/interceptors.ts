/**
 * Interceptors: the public seam every call passes, both ways. `outbound`
 * sees each call, stream, request and cast this node makes before it is
 * sent, and may refuse it by throwing (the caller gets that error); what it
 * returns is told each peer's result. `inbound` sees each call and cast a
 * peer makes before its handler runs, and may refuse it by throwing (the
 * caller gets it as the handler's error); what it returns is told how the
 * call ended. Metrics are built on them; so can tracing or authorisation be.
 * With none in use, a call pays one length check.
 */
import type { CallContext, CallOptions, CastOptions } from '../calls/context.js'
import type { CallResult } from '../calls/results.js'

/** A call this node is about to make. */
export interface OutboundCall {
  readonly method: string
  /** The peers it goes to (every active peer, named). */
  readonly to: readonly string[]
  /** A cast: no results will come. */
  readonly cast: boolean
  /** Its encoded arguments, bytes (sent once to each peer). */
  readonly bytes: number
  readonly options: Readonly<CallOptions> | Readonly<CastOptions>
}

/** One peer's result of an outbound call, with the time it took and the reply's encoded size. */
export type OutboundResult = (result: CallResult, took: { ms: number; bytes: number }) => void

/** A peer's call this node is about to serve. */
export interface InboundCall {
  readonly method: string
  readonly from: string
  readonly cast: boolean
  /** Its encoded arguments, bytes. */
  readonly bytes: number
  readonly ctx: CallContext
}

/** How a served call ended. */
export interface InboundOutcome {
  /** Answered with a reply (a cast: its handler did not fail). */
  readonly ok: boolean
  /** Why not: REMOTE (the handler threw), BAD_REPLY, TOO_LARGE, CANCELLED, PEER_DOWN, TIMEOUT (it finished after its deadline), CLOSED. */
  readonly code: string | undefined
  readonly ms: number
  /** The encoded reply, bytes (0 when there is none). */
  readonly bytes: number
}

export type InboundEnd = (outcome: InboundOutcome) => void

export interface Interceptor {
  outbound?(call: OutboundCall): OutboundResult | void
  inbound?(call: InboundCall): InboundEnd | void
}

/** Run `hooks` on `call` in order, gathering what they return; a throw refuses the call (rethrown to the caller of this). */
export function intercept<C, R>(hooks: readonly ((call: C) => R | void)[], call: C): R[] | undefined {
  let seen: R[] | undefined
  for (const hook of hooks) {
    const observer = hook(call)
    if (typeof observer === 'function') (seen ??= []).push(observer)
  }
  return seen
}

/** Tell each observer, never letting one's failure reach the call. */
export function tell<A extends unknown[]>(observers: readonly ((...args: A) => void)[], ...args: A): void {
  for (const observe of observers) {
    try {
      observe(...args)
    } catch {
      // An observer's own failure is not the call's.
    }
  }
}
