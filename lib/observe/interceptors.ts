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
 * The interceptors of one direction, in the order added. `run` runs them on
 * a call, gathering the observers they return. The gathered list is reused
 * from one call to the next while the hooks return the same observers (as
 * the metrics do), so a call pays for no array of its own; a list handed
 * out is never changed.
 */
export class Chain<C, R> {
  private hooks: readonly ((call: C) => R | void)[] = []
  /** What the last run gathered. */
  private last: readonly R[] = []

  get length(): number {
    return this.hooks.length
  }

  /** Add `hook`; returns a function that removes it. */
  add(hook: (call: C) => R | void): () => void {
    this.hooks = [...this.hooks, hook]
    this.last = []
    return () => {
      this.hooks = this.hooks.filter((h) => h !== hook)
      // Observers of a removed hook are not kept alive by the list reused for the next call.
      this.last = []
    }
  }

  /**
   * Run the hooks on `call` in order and return the observers they gave
   * (undefined if none did). A throw refuses the call: the observers
   * gathered so far are told (`refused(context, gathered, error)`), then it
   * is rethrown to the caller of this. A hook that returns a promise (an
   * async interceptor) refuses the call too: it could not refuse it in
   * time, and letting the call through unchecked would make an async
   * authorisation check pass everything.
   */
  run<X>(call: C, refused: (context: X, gathered: readonly R[], error: unknown) => void, context: X): readonly R[] | undefined {
    const last = this.last
    // Observers gathered: the first n of `last` while they match it, then `fresh`.
    let n = 0
    let fresh: R[] | undefined
    for (const hook of this.hooks) {
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
        const gathered = fresh ?? last.slice(0, n)
        if (gathered.length > 0) refused(context, gathered, error)
        throw error
      }
      if (typeof observer !== 'function') continue
      if (fresh === undefined && last[n] === observer) n++
      else (fresh ??= last.slice(0, n)).push(observer)
    }
    if (fresh === undefined) {
      if (n === 0) return undefined
      if (n === last.length) return last
      fresh = last.slice(0, n)
    }
    this.last = fresh
    return fresh
  }
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
