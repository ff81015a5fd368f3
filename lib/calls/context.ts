/**
 * What a handler is told about the call it serves (`ctx`), and the options
 * of the calls a node makes, since a handler's onward calls are made from
 * its `ctx`: they inherit its remaining deadline, its signal and the
 * metadata keys a node forwards.
 *
 * `ctx.signal` costs nothing until it is read: most handlers never look at
 * it, and an AbortController per call would be paid by all of them.
 */
import type { Meta } from './meta.js'
import type { Until } from './policy.js'
import type { CallResult } from './results.js'
import type { CallStream } from './stream.js'

/** Options of `call()` and `stream()`. */
export interface CallOptions {
  /** How long to wait for replies, ms (1 to 2147483647). Default: the node's `callTimeout` (2000), or what is left of `parent`'s deadline if that is sooner. */
  timeout?: number
  /** Aborting it settles the call at once: every peer still to answer gets `CANCELLED`, and is sent a CANCEL. */
  signal?: AbortSignal
  /** Sent with the call, seen by the handler as `ctx.meta`: keys of a-z 0-9 . _ -, string or Uint8Array values, at most `maxMetaBytes` encoded. */
  meta?: Record<string, string | Uint8Array>
  /** Stop before every peer has answered: `{ ok: k }`, `'first-ok'`, or a function of the results so far. The peers left get `CANCELLED`. */
  until?: Until
  /** The handler call this one is made for (a handler's `ctx`): its deadline, signal and forwarded metadata are inherited. `ctx.call()` sets it. */
  parent?: CallContext
  /** With `parent`: inherit neither its deadline nor its signal (work that must outlive its caller). Its forwarded metadata still goes. */
  detach?: boolean
  /**
   * `call()` and `request()` only: a named peer this node is connecting to
   * but that is not up yet is waited for (and, with no peers named, the
   * first peer to come up when none is), within the call's own timeout;
   * what is left of it is the call's. A peer still not up then gets
   * `NOT_CONNECTED`, saying why it is not. Default false: such a peer gets
   * `NOT_CONNECTED` at once.
   */
  waitForPeers?: boolean
}

/** Options of `cast()`. */
export interface CastOptions {
  /** As for `call()`. */
  meta?: Record<string, string | Uint8Array>
  /** As for `call()`: only the metadata is inherited (a cast has no deadline, and is not cancelled). */
  parent?: CallContext
}

/** What a handler learns about the call it serves. */
export interface CallContext {
  /** The caller's node name (its public key on an encrypted node): what the link proved, never taken from metadata. */
  readonly from: string
  /** The full method name, `Receiver.Method`. */
  readonly method: string
  /** True for a `cast`, whose result is discarded. */
  readonly cast: boolean
  /**
   * When the caller stops waiting, in ms since the epoch (compare with
   * `Date.now()`); undefined for a cast, or for a caller of an earlier
   * release, which sends none. The caller's own clock is never used: the
   * CALL carries the time left.
   */
  readonly deadline: number | undefined
  /**
   * Aborts when the caller cancels the call, when the deadline passes, when
   * the caller's node goes down (it parted, its connection died), and when
   * this node closes; `signal.reason` is a BilateralError whose code says
   * which: `CANCELLED`, `TIMEOUT`, `PEER_DOWN`, `CLOSED`. The handler's
   * result is dropped once it has aborted.
   */
  readonly signal: AbortSignal
  /** The metadata the caller sent (read-only; empty if none). */
  readonly meta: Meta
  /** A call made for this one: it inherits this call's deadline, signal and forwarded metadata (`detach: true` keeps only the metadata). */
  call<R = unknown>(to: readonly string[], method: string, args?: unknown, options?: CallOptions): Promise<CallResult<R>[]>
  /** A stream made for this one, inheriting as `call()` does. */
  stream<R = unknown>(to: readonly string[], method: string, args?: unknown, options?: CallOptions): CallStream<R>
  /** A cast made for this one (as Akka calls a message that wants no answer): it carries this call's forwarded metadata. */
  tell(to: readonly string[], method: string, args?: unknown, options?: CastOptions): Promise<string[]>
}

/** What a context needs from the node: the calls its handler makes onwards. */
export interface Caller {
  call<R>(to: readonly string[], method: string, args: unknown, options: CallOptions): Promise<CallResult<R>[]>
  stream<R>(to: readonly string[], method: string, args: unknown, options: CallOptions): CallStream<R>
  cast(to: readonly string[], method: string, args: unknown, options: CastOptions): Promise<string[]>
}

/** The serving side's record of one call, as its context sees it. */
export interface Served {
  /** The deadline in `Date.now()` ms, if the call has one. */
  deadline(): number | undefined
  /** The ms left before it, by the node's monotonic clock (what onward calls inherit), if the call has one. */
  remaining(): number | undefined
  /** The call's signal, made when first asked for. */
  signal(): AbortSignal
}

/** A handler's `ctx`. Its internals are private fields, out of the handler's reach. */
export class Context implements CallContext {
  readonly #served: Served
  readonly #caller: Caller

  constructor(
    readonly from: string,
    readonly method: string,
    readonly cast: boolean,
    readonly meta: Meta,
    served: Served,
    caller: Caller,
  ) {
    this.#served = served
    this.#caller = caller
  }

  get deadline(): number | undefined {
    return this.#served.deadline()
  }

  /** @internal What is left of `ctx`'s deadline, by the clock that runs it: an onward call's inherited timeout. */
  static remaining(ctx: Context): number | undefined {
    return ctx.#served.remaining()
  }

  get signal(): AbortSignal {
    return this.#served.signal()
  }

  call<R = unknown>(to: readonly string[], method: string, args?: unknown, options: CallOptions = {}): Promise<CallResult<R>[]> {
    return this.#caller.call<R>(to, method, args, { ...options, parent: this })
  }

  stream<R = unknown>(to: readonly string[], method: string, args?: unknown, options: CallOptions = {}): CallStream<R> {
    return this.#caller.stream<R>(to, method, args, { ...options, parent: this })
  }

  tell(to: readonly string[], method: string, args?: unknown, options: CastOptions = {}): Promise<string[]> {
    return this.#caller.cast(to, method, args, { ...options, parent: this })
  }
}
