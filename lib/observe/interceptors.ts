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
  /** A cast: its one result a peer is that it was handed over (or refused). */
  readonly cast: boolean
  /** Its encoded arguments, bytes (sent once to each peer). */
  readonly bytes: number
  readonly options: Readonly<CallOptions> | Readonly<CastOptions>
}

/** One peer's result of an outbound call: the time it took (ms), the reply's encoded size (bytes, 0 for an error), and the call. */
export type OutboundResult = (result: CallResult, ms: number, bytes: number, call: OutboundCall) => void

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

/** How a served call ended, and the call. */
export type InboundEnd = (outcome: InboundOutcome, call: InboundCall) => void

export interface Interceptor {
  outbound?(call: OutboundCall): OutboundResult | void
  inbound?(call: InboundCall): InboundEnd | void
}

/**
 * Run `hooks` on `call` in order, gathering what they return. A throw
 * refuses the call: the observers gathered so far are told (`refused`), then
 * it is rethrown to the caller of this. A hook that returns a promise (an
 * async interceptor) refuses the call too: it could not refuse it in time,
 * and letting the call through unchecked would make an async authorisation
 * check pass everything.
 */
export function intercept<C, R>(
  hooks: readonly ((call: C) => R | void)[],
  call: C,
  refused: (gathered: readonly R[], error: unknown) => void,
): R[] | undefined {
  let seen: R[] | undefined
  for (const hook of hooks) {
    let observer: R | void
    try {
      observer = hook(call)
      if (isThenable(observer)) {
        observer.then(undefined, () => {})
        throw new TypeError(
          'an interceptor returned a promise: interceptors run synchronously (an async one cannot refuse a call in time), so the call was refused',
        )
      }
    } catch (error) {
      if (seen !== undefined) refused(seen, error)
      throw error
    }
    if (typeof observer === 'function') (seen ??= []).push(observer)
  }
  return seen
}

/** Is `value` a promise or another thenable? */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

/** Tell each outbound observer of one peer's result; an observer's throw stays its own, never the call's. */
export function report(observers: readonly OutboundResult[], result: CallResult, ms: number, bytes: number, call: OutboundCall): void {
  for (const observe of observers) {
    try {
      observe(result, ms, bytes, call)
    } catch {
      // Not the call's failure.
    }
  }
}
