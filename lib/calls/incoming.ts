/**
 * The calls we serve: lookup, admission, the table of running handlers, and
 * the answer. In that order, so nothing is decoded for a call that will be
 * refused or not run: a method this caller may not call is NO_SUCH_METHOD before its
 * arguments are looked at, and one beyond the limits is OVERLOADED before
 * they are decoded.
 *
 * Limits are shared fairly: while `n` peers have handlers running, one may
 * hold at most `(limit − limit/16) / n` of `maxConcurrent` handlers and of
 * `maxConcurrentBytes` argument bytes, so a peer flooding the node leaves
 * room for every other, and a newcomer always finds some. A peer with
 * nothing running may always start one call the totals allow.
 *
 * The table of running handlers is keyed by (peer, call id), so a CANCEL, a
 * deadline passing, the caller going down or close() finds the handlers to
 * abort (their `ctx.signal`); an aborted handler keeps its place against the
 * limits until it settles (the work is still running), and its result is
 * dropped and counted. A CALL that arrives with no time left is not run.
 *
 * Every answer goes back on the link its call came in on. If that link has
 * closed, another link to the same incarnation of the caller will do (a
 * cross-dial moved the pair); otherwise the answer has nowhere correct to go
 * and is dropped, and counted: the caller that asked is gone.
 */
import type { Clock } from '../clock.js'
import { BilateralError, RemoteError, clip, type ErrorCode } from '../errors.js'
import type { Link, SendTag } from '../mesh/link.js'
import type { Codec } from '../wire/codec.js'
import { encodeBody } from '../wire/body.js'
import {
  FrameType,
  MAX_CODE_LENGTH,
  MAX_DETAILS_BYTES,
  MAX_VIA,
  MAX_VIA_BYTES,
  encodeError,
  encodeReply,
  type DataFrame,
} from '../wire/frames.js'
import { Context, type CallContext, type Caller, type Served } from './context.js'
import { isThenable, type Chain, type InboundCall, type InboundEnd, type InboundOutcome } from '../observe/interceptors.js'
import { decodeMeta } from './meta.js'
import { sameProcess } from './outgoing.js'
import type { Registry } from './registry.js'

export interface IncomingLimits {
  readonly maxConcurrent: number
  readonly maxConcurrentBytes: number
  readonly maxMessageSize: number
  readonly maxMetaBytes: number
}

export interface IncomingHost {
  /** The live link to `peer`, if any. */
  liveLink(peer: string): Link | undefined
  /** A cast's handler threw or rejected, or a cast was refused (there is no caller to tell). */
  castError(error: unknown, ctx: CallContext): void
  /** The result a handler returned, encoded; throws TOO_LARGE or a TypeError. */
  encode(value: unknown, method: string): Uint8Array
  /** Where a handler's onward calls (`ctx.call()`) go. */
  readonly caller: Caller
  /** A call or cast was refused before its handler ran, or its result could not be sent: `code` says why. */
  refused(peer: string, method: string, code: ErrorCode, message: string): void
  /** The inbound interceptors, in order (empty while none is in use). */
  readonly inbound: Chain<InboundCall, InboundEnd>
}

/** Why a served call's answer was not sent, counted in stats(). */
export interface Unanswered {
  /** Its caller cancelled it. */
  cancelled: number
  /** It finished after its deadline: its caller had stopped waiting. */
  late: number
  /** It arrived with no time left, and was not run. */
  expired: number
  /** Its caller's link closed and no link to the same process remains, its caller went down, or is not reading. */
  dropped: number
}

/** The handlers running for one peer: calls by id, casts, and what they hold against the limits. */
interface Share {
  /** Calls by id, for CANCEL. */
  readonly calls: Map<number, Running>
  /** Casts, and calls whose id a newer call of the peer took: still running, still counted, no longer cancellable by id. */
  readonly others: Set<Running>
  count: number
  bytes: number
}

/** A handler running for a remote caller: its place in the table, its deadline, its signal. */
class Running implements Served {
  /** Why it was aborted; its answer is then dropped. */
  reason: BilateralError | undefined = undefined
  /** Made when the handler first reads `ctx.signal`. */
  private controller: AbortController | undefined = undefined
  private timer: unknown = undefined
  private epoch: number | undefined = undefined
  /** Its peer's share of the table while it is in it (a handler that answers later). */
  share: Share | undefined = undefined
  /** Whether it has answered (or been dropped): nothing more may happen to it. */
  over = false
  /** What inbound interceptors asked to be told of its end, and when it began (clock ms); undefined with none. */
  ends: readonly InboundEnd[] | undefined = undefined
  /** The call as they saw it. */
  seen: InboundCall | undefined = undefined
  began = 0

  constructor(
    private readonly clock: Clock,
    readonly link: Link,
    /** The call id, or undefined for a cast. */
    readonly id: number | undefined,
    readonly method: string,
    readonly bytes: number,
    /** When the caller stops waiting, on `clock`; undefined if it did not say. */
    readonly expires: number | undefined,
  ) {}

  get from(): string {
    return this.link.peer
  }

  remaining(): number | undefined {
    return this.expires === undefined ? undefined : this.expires - this.clock.now()
  }

  deadline(): number | undefined {
    if (this.expires === undefined) return undefined
    this.epoch ??= Math.floor(Date.now() + this.expires - this.clock.now())
    return this.epoch
  }

  signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController()
      if (this.reason !== undefined) this.controller.abort(this.reason)
      else if (this.expires !== undefined && !this.over) this.arm()
    }
    return this.controller.signal
  }

  /** Abort its signal with `reason` (the first reason stays). */
  abort(reason: BilateralError): void {
    if (this.reason !== undefined || this.over) return
    this.reason = reason
    this.stopTimer()
    this.controller?.abort(reason)
  }

  /** A timer for the deadline, in steps no timer exceeds (a peer may announce up to 2³² − 1 ms). */
  private arm(): void {
    const left = this.expires! - this.clock.now()
    if (left <= 0) this.expire()
    else this.timer = this.clock.setTimer(this.expire, Math.min(left, MAX_TIMER))
  }

  /** The timer fired: its deadline passed, or the next step is due. */
  private readonly expire = (): void => {
    this.timer = undefined
    if (this.expires! - this.clock.now() > 0) return this.arm()
    this.abort(new BilateralError('TIMEOUT', `the caller of ${this.method} stopped waiting: its deadline passed`, { peer: this.from }))
  }

  /** It settled: no timer may outlive it. */
  finish(): void {
    this.over = true
    this.stopTimer()
  }

  private stopTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimer(this.timer)
    this.timer = undefined
  }
}

/** The longest a timer may be set for, ms (Node clamps longer ones to 1). */
const MAX_TIMER = 2 ** 31 - 1

/** The served side of a call refused before it ran (a cast's `cast:error` still gets a context). */
const refusedCall: Served = {
  deadline: () => undefined,
  remaining: () => undefined,
  signal: () => new AbortController().signal,
}

export class IncomingCalls {
  /** Running handlers that answer later, by caller. */
  private readonly running = new Map<string, Share>()
  private count = 0
  private bytes = 0
  private closed = false
  /** Answers not sent, by why. */
  readonly unanswered: Unanswered = { cancelled: 0, late: 0, expired: 0, dropped: 0 }
  /** The tag of every answer: told when its batch was not sent. */
  private readonly answerTag: SendTag = { unsent: () => void this.unanswered.dropped++ }
  /**
   * Characters of a handler error's name and message sent to the caller, so
   * that an ERROR envelope stays within maxMessageSize (at most 3 bytes a
   * character: a fifth and a twentieth of it, with room for the rest).
   */
  private readonly errorMessage: number
  private readonly errorName: number
  /** The largest message we may send (as for a result), bytes: what an ERROR's optional fields must fit within. */
  private readonly maxMessageSize: number

  constructor(
    private readonly registry: Registry,
    private readonly codec: Codec,
    private readonly limits: IncomingLimits,
    private readonly host: IncomingHost,
    private readonly clock: Clock,
  ) {
    this.errorMessage = Math.min(16 * 1024, Math.floor(limits.maxMessageSize / 5))
    this.maxMessageSize = limits.maxMessageSize
    this.errorName = Math.min(256, Math.floor(limits.maxMessageSize / 20))
  }

  /** Handlers running now, the argument bytes they hold, and the peers they run for. */
  get size(): { running: number; runningBytes: number; runningPeers: number } {
    return { running: this.count, runningBytes: this.bytes, runningPeers: this.running.size }
  }

  /** A CALL or CAST arrived on `link`. */
  serve(link: Link, frame: Extract<DataFrame, { type: FrameType.CALL | FrameType.CAST }>): void {
    const peer = link.peer
    const id = frame.type === FrameType.CALL ? frame.id : undefined
    const { method, body } = frame
    const handler = this.registry.lookup(method, peer)
    if (handler === undefined) return this.refuse(link, method, id, 'NO_SUCH_METHOD', `no method ${method}`)
    const busy = this.admit(peer, body.length)
    if (busy !== undefined) return this.refuse(link, method, id, 'OVERLOADED', busy)
    // Only a peer that announced call terms has its deadline and metadata read (PROTOCOL.md 8.1); an earlier release's CALL is served as before.
    const terms = link.lifecycle
    // Without a deadline of its own, a CALL has the callTimeout its caller announced.
    const left =
      id === undefined || !terms
        ? undefined
        : frame.type === FrameType.CALL && frame.deadline !== undefined
          ? frame.deadline
          : link.peerCallTimeout
    if (left === 0) {
      this.unanswered.expired++
      return
    }
    let meta
    try {
      meta = decodeMeta(terms ? frame.meta : undefined, this.limits.maxMetaBytes, peer)
    } catch (error) {
      return this.refuse(link, method, id, 'BAD_REQUEST', (error as Error).message, error)
    }
    let args: unknown
    try {
      args = this.codec.decodeBody(body)
    } catch (error) {
      return this.refuse(link, method, id, 'BAD_REQUEST', `undecodable arguments for ${method}: ${(error as Error).message}`, error)
    }
    // Counted from receipt: a live link's lastHeard is the clock reading taken as this message arrived (no second reading per call).
    const receivedAt = left === undefined ? 0 : (link.arrived ?? this.clock.now())
    const run = new Running(this.clock, link, id, method, body.length, left === undefined ? undefined : receivedAt + left)
    const ctx = new Context(peer, method, id === undefined, meta, run, this.host.caller)
    const hooks = this.host.inbound
    if (hooks.length > 0) {
      // From its arrival, as its deadline is: on a live link, the reading taken as its message came.
      run.began = link.arrived ?? this.clock.now()
      try {
        run.seen = { method, from: peer, cast: id === undefined, bytes: body.length, ctx }
        run.ends = hooks.run(run.seen, this.refusedBy, run)
      } catch (error) {
        // An interceptor refused it: answered as if its handler had thrown that, and the handler does not run.
        return this.raised(run, ctx, error)
      }
    }
    let result: unknown
    try {
      result = handler(args, ctx)
    } catch (error) {
      return this.raised(run, ctx, error)
    }
    // Only a handler that answers later is entered in the table (nothing else runs while one answers at once), and only it needs closures.
    if (isThenable(result)) {
      this.begin(run)
      result.then(
        (value) => this.succeeded(run, value),
        (error) => this.raised(run, ctx, error),
      )
    } else this.succeeded(run, result)
  }

  /** A CANCEL for call `id` arrived on `link`: abort its handler, if it runs for that process of the caller. */
  cancel(link: Link, id: number): void {
    if (!link.lifecycle) return
    const run = this.running.get(link.peer)?.calls.get(id)
    if (run === undefined || !sameProcess(run.link, link, false)) return
    run.abort(new BilateralError('CANCELLED', `the caller cancelled ${run.method}`, { peer: link.peer }))
  }

  /** `peer` went down: abort every handler running for it (their answers have no one to go to). */
  peerDown(peer: string, why: string): void {
    const share = this.running.get(peer)
    if (share === undefined) return
    const reason = new BilateralError('PEER_DOWN', `the caller ${peer} went down (${why})`, { peer })
    for (const run of [...share.calls.values(), ...share.others]) run.abort(reason)
  }

  /** close(): every running handler is aborted, no longer ours to count; their results are dropped. */
  close(): void {
    if (this.closed) return
    this.closed = true
    const reason = new BilateralError('CLOSED', 'the node was closed')
    const shares = [...this.running.values()]
    this.running.clear()
    this.count = 0
    this.bytes = 0
    for (const share of shares) {
      for (const run of [...share.calls.values(), ...share.others]) {
        // No longer ours to count: the table is gone.
        run.share = undefined
        run.abort(reason)
      }
    }
  }

  /** Why `peer` may not start a call of `bytes` argument bytes now, or undefined if it may. */
  private admit(peer: string, bytes: number): string | undefined {
    const { maxConcurrent, maxConcurrentBytes } = this.limits
    if (this.count >= maxConcurrent) return `${this.count} handlers are already running (maxConcurrent)`
    if (this.bytes + bytes > maxConcurrentBytes) return `running handlers hold ${this.bytes} bytes of arguments (maxConcurrentBytes)`
    const mine = this.running.get(peer)
    if (mine === undefined) return undefined
    const busy = this.running.size
    const share = Math.max(1, Math.floor((maxConcurrent - Math.floor(maxConcurrent / 16)) / busy))
    if (mine.count >= share)
      return `${mine.count} handlers already run for ${peer}, its fair share of maxConcurrent while ${busy} peers are busy`
    const shareBytes = Math.floor((maxConcurrentBytes - Math.floor(maxConcurrentBytes / 16)) / busy)
    if (mine.bytes + bytes > shareBytes) {
      return `handlers running for ${peer} hold ${mine.bytes} bytes of arguments, its fair share of maxConcurrentBytes while ${busy} peers are busy`
    }
    return undefined
  }

  private begin(run: Running): void {
    let share = this.running.get(run.from)
    if (share === undefined) this.running.set(run.from, (share = { calls: new Map(), others: new Set(), count: 0, bytes: 0 }))
    if (run.id === undefined) share.others.add(run)
    else {
      // An id still running from an earlier process under the name (or reused by a caller that gave up on it): that one is
      // abandoned, and aborted, but it holds its place against the limits until it settles.
      const before = share.calls.get(run.id)
      if (before !== undefined) {
        before.abort(new BilateralError('CANCELLED', `${run.from} reused the id of ${before.method} for a new call`, { peer: run.from }))
        share.others.add(before)
      }
      share.calls.set(run.id, run)
    }
    run.share = share
    share.count++
    share.bytes += run.bytes
    this.count++
    this.bytes += run.bytes
  }

  /**
   * The handler has settled: out of the table, and its answer may go.
   * False if it is to be dropped: the node closed, the call was aborted, or
   * its deadline passed (each counted).
   */
  private end(run: Running): boolean {
    if (run.over) return false
    run.finish()
    const share = run.share
    if (share !== undefined) {
      run.share = undefined
      if (share.calls.get(run.id!) === run) share.calls.delete(run.id!)
      else share.others.delete(run)
      share.count--
      share.bytes -= run.bytes
      if (share.count === 0 && this.running.get(run.from) === share) this.running.delete(run.from)
      this.count--
      this.bytes -= run.bytes
    }
    if (this.closed) {
      this.told(run, false, 'CLOSED', 0)
      return false
    }
    const reason = run.reason?.code
    // A handler that answered at once cannot have outlived its deadline (an expired CALL is never run); only one that answered later is timed.
    if (reason === undefined && (run.expires === undefined || share === undefined || this.clock.now() <= run.expires)) return true
    this.told(run, false, reason ?? 'TIMEOUT', 0)
    if (run.id === undefined) return reason === undefined
    if (reason === 'CANCELLED') this.unanswered.cancelled++
    else if (reason === 'PEER_DOWN') this.unanswered.dropped++
    else this.unanswered.late++
    return false
  }

  /** A later interceptor refused `run`: the observers gathered before it are told it failed. */
  private readonly refusedBy = (run: Running, gathered: readonly InboundEnd[]): void => {
    run.ends = gathered
    this.told(run, false, 'REMOTE', 0)
  }

  /** Tell a run's inbound interceptors how it ended. */
  private told(run: Running, ok: boolean, code: string | undefined, bytes: number): void {
    const ends = run.ends
    if (ends === undefined) return
    run.ends = undefined
    const outcome: InboundOutcome = { ok, code, ms: this.clock.now() - run.began, bytes }
    for (const end of ends) {
      try {
        end(outcome, run.seen!)
      } catch {
        // An observer's own failure is not the call's.
      }
    }
  }

  /** A handler returned `result` (or its promise resolved to it): answer a CALL. */
  private succeeded(run: Running, result: unknown): void {
    if (!this.end(run)) return
    if (run.id === undefined) {
      this.told(run, true, undefined, 0)
      return
    }
    let encoded: Uint8Array
    try {
      encoded = this.host.encode(result, run.method)
    } catch (error) {
      const [code, message] =
        error instanceof BilateralError
          ? [error.code, error.message]
          : (['BAD_REPLY', `the result of ${run.method} cannot be encoded: ${describe(error).message}`] as const)
      this.told(run, false, code, 0)
      return this.fail(run.link, run.method, run.id, code, message)
    }
    this.told(run, true, undefined, encoded.byteLength)
    this.answer(run.link, [encodeReply(run.id), encoded])
  }

  /** A handler threw or rejected: answer a CALL with REMOTE, report a CAST. */
  private raised(run: Running, ctx: CallContext, error: unknown): void {
    if (!this.end(run)) return
    this.told(run, false, 'REMOTE', 0)
    const { name, message, code, details, via } = describe(error)
    if (run.id === undefined) {
      this.host.castError(error ?? new BilateralError('REMOTE', message, { peer: run.from }), ctx)
      return
    }
    const [n, m] = [clip(name, this.errorName), clip(message, this.errorMessage)]
    let frame = encodeError(run.id, 'REMOTE', n, m, code)
    // Fields 7 and 8 go only to peers of this release (one of the previous release refuses a binary over 1 KiB), and
    // only as far as they fit within maxMessageSize beside the rest: the path first, the details if there is room.
    if (run.link.lifecycle && (details !== undefined || via !== undefined)) {
      const room = this.maxMessageSize - frame.byteLength - 16
      const v = via !== undefined && via.byteLength <= room ? via : undefined
      const d = details !== undefined && details.byteLength <= room - (v?.byteLength ?? 0) ? details : undefined
      if (v !== undefined || d !== undefined) frame = encodeError(run.id, 'REMOTE', n, m, code, d, v)
    }
    this.answer(run.link, [frame])
  }

  /** A call that cannot be served (its handler does not run) is reported to the host, then failed. */
  private refuse(link: Link, method: string, id: number | undefined, code: ErrorCode, message: string, cause?: unknown): void {
    this.host.refused(link.peer, method, code, message)
    this.fail(link, method, id, code, message, cause)
  }

  /** Answer a CALL with ERROR `code`, or report a CAST that failed (`cast:error`). */
  private fail(link: Link, method: string, id: number | undefined, code: ErrorCode, message: string, cause?: unknown): void {
    const peer = link.peer
    if (id === undefined) {
      const ctx = new Context(peer, method, true, Object.freeze({}), refusedCall, this.host.caller)
      this.host.castError(cause ?? new BilateralError(code, message, { peer }), ctx)
    } else this.answer(link, [encodeError(id, code, 'BilateralError', clip(message, this.errorMessage))])
  }

  /** On the link the call came in on, or another link to the same process of the caller; else nowhere. */
  private answer(link: Link, frame: Uint8Array[]): void {
    if (this.closed) return
    if (link.state !== 'closed') return link.post(frame, this.answerTag)
    const live = this.host.liveLink(link.peer)
    if (live !== undefined && sameProcess(live, link, false)) return live.post(frame, this.answerTag)
    this.unanswered.dropped++
  }
}

/** Encode `value` as a result, within `maxMessageSize` (TOO_LARGE beyond it). */
export function encodeWithin(value: unknown, maxMessageSize: number, what: string): Uint8Array {
  const body = encodeBody(value)
  if (body.byteLength > maxMessageSize) {
    throw new BilateralError('TOO_LARGE', `${what} encode to ${body.byteLength} bytes, more than maxMessageSize (${maxMessageSize})`)
  }
  return body
}

/** `String(value)`, or `fallback` for a value that has no string form. */
function text(value: unknown, fallback: string): string {
  try {
    return String(value)
  } catch {
    return fallback
  }
}

/** What an ERROR carries of a handler's error. */
interface Described {
  name: string
  message: string
  code: string | undefined
  details: Uint8Array | undefined
  via: Uint8Array | undefined
}

/**
 * What a handler threw, as an ERROR carries it: its name, its message, its
 * own string `code` (as Node's and many libraries' errors have) and its
 * `details` if they encode within MAX_DETAILS_BYTES. A {@link RemoteError}
 * re-thrown from a further peer is passed on as the original (its name,
 * message, code and details) with the peers it came through, so a caller
 * two hops away still sees the code the first handler threw.
 * Whatever was thrown (a null-prototype object, a throwing getter, a Proxy),
 * this does not throw: a handler's odd value must not take the node down.
 */
function describe(error: unknown): Described {
  try {
    if (error instanceof RemoteError) {
      return {
        name: error.remoteName,
        message: error.remoteMessage,
        code: error.remoteCode,
        details: detailsOf(error.details),
        via: viaOf(error.path),
      }
    }
    const own = (error as { code?: unknown } | null | undefined)?.code
    const code = typeof own === 'string' && own.length <= MAX_CODE_LENGTH ? own : undefined
    const details = detailsOf((error as { details?: unknown } | null | undefined)?.details)
    if (error instanceof Error) return { name: text(error.name, 'Error'), message: text(error.message, ''), code, details, via: undefined }
    return { name: 'Error', message: text(error, 'a value without a string form'), code, details, via: undefined }
  } catch {
    return { name: 'Error', message: 'a value without a string form', code: undefined, details: undefined, via: undefined }
  }
}

/** `details` as a body, if it has one that encodes within MAX_DETAILS_BYTES; else none (it is not worth failing the answer for). */
function detailsOf(details: unknown): Uint8Array | undefined {
  if (details === undefined) return undefined
  try {
    const body = encodeBody(details)
    return body.byteLength <= MAX_DETAILS_BYTES ? body : undefined
  } catch {
    return undefined
  }
}

/**
 * The peers a remote error came through, bounded: the first (where it was
 * thrown) and the latest MAX_VIA − 1. Names are at most 255 bytes (a
 * received path is checked so), so 15 encode within MAX_VIA_BYTES; should
 * they not, only the first and the last go.
 */
function viaOf(path: readonly string[]): Uint8Array | undefined {
  const kept = path.length <= MAX_VIA ? path : [path[0]!, ...path.slice(path.length - MAX_VIA + 1)]
  const body = encodeBody(kept)
  return body.byteLength <= MAX_VIA_BYTES ? body : encodeBody([path[0]!, path[path.length - 1]!].map((p) => p.slice(0, 64)))
}
