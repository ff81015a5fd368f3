/**
 * The calls we serve: lookup, admission, the table of running handlers, and
 * the answer. In that order, so nothing is decoded for a call that will be
 * refused: a method this caller may not call is NO_SUCH_METHOD before its
 * arguments are looked at, and one beyond the limits is OVERLOADED before
 * they are decoded.
 *
 * Limits are shared fairly: while `n` peers have handlers running, one may
 * hold at most `(limit − limit/16) / n` of `maxConcurrent` handlers and of
 * `maxConcurrentBytes` argument bytes, so a peer flooding the node leaves
 * room for every other, and a newcomer always finds some. A peer with
 * nothing running may always start one call the totals allow.
 *
 * Every answer goes back on the link its call came in on. If that link has
 * closed, another link to the same incarnation of the caller will do (a
 * cross-dial moved the pair); otherwise the answer has nowhere correct to go
 * and is dropped, and counted: the caller that asked is gone.
 */
import { BilateralError, clip } from '../errors.js'
import type { Link, SendTag } from '../mesh/link.js'
import type { Codec } from '../wire/codec.js'
import { encodeBody } from '../wire/body.js'
import { FrameType, encodeError, encodeReply, type DataFrame } from '../wire/frames.js'
import { sameProcess } from './outgoing.js'
import type { CallContext, Registry } from './registry.js'

export interface IncomingLimits {
  readonly maxConcurrent: number
  readonly maxConcurrentBytes: number
  readonly maxMessageSize: number
}

export interface IncomingHost {
  /** The live link to `peer`, if any. */
  liveLink(peer: string): Link | undefined
  /** A cast's handler threw or rejected, or a cast was refused (there is no caller to tell). */
  castError(error: unknown, ctx: CallContext): void
  /** The result a handler returned, encoded; throws TOO_LARGE or a TypeError. */
  encode(value: unknown, method: string): Uint8Array
}

/** A handler running for a remote caller. */
interface Running {
  readonly link: Link
  /** The call id, or undefined for a cast. */
  readonly id: number | undefined
  readonly ctx: CallContext
  readonly bytes: number
}

interface Share {
  count: number
  bytes: number
}

export class IncomingCalls {
  /** Running handlers, by the link that carried their call. */
  private readonly running = new Map<Link, Set<Running>>()
  private readonly perPeer = new Map<string, Share>()
  private count = 0
  private bytes = 0
  private closed = false
  /** Answers that could not go: their caller's link closed and no link to the same process remains, or the caller is not reading. */
  dropped = 0
  /** The tag of every answer: told when its batch was not sent. */
  private readonly answerTag: SendTag = { unsent: () => void this.dropped++ }
  /**
   * Characters of a handler error's name and message sent to the caller, so
   * that an ERROR envelope stays within maxMessageSize (at most 3 bytes a
   * character: a fifth and a twentieth of it, with room for the rest).
   */
  private readonly errorMessage: number
  private readonly errorName: number

  constructor(
    private readonly registry: Registry,
    private readonly codec: Codec,
    private readonly limits: IncomingLimits,
    private readonly host: IncomingHost,
  ) {
    this.errorMessage = Math.min(16 * 1024, Math.floor(limits.maxMessageSize / 5))
    this.errorName = Math.min(256, Math.floor(limits.maxMessageSize / 20))
  }

  /** Handlers running now, and the argument bytes they hold. */
  get size(): { running: number; runningBytes: number } {
    return { running: this.count, runningBytes: this.bytes }
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
    let args: unknown
    try {
      args = this.codec.decodeBody(body)
    } catch (error) {
      return this.refuse(link, method, id, 'BAD_REQUEST', `undecodable arguments for ${method}: ${(error as Error).message}`, error)
    }
    const ctx: CallContext = { from: peer, method, cast: id === undefined }
    const run: Running = { link, id, ctx, bytes: body.length }
    let result: unknown
    try {
      result = handler(args, ctx)
    } catch (error) {
      return this.raised(run, error, false)
    }
    // Only a handler that answers later is entered in the table (nothing else runs while one answers at once), and only it needs closures.
    if (isThenable(result)) {
      this.begin(run)
      result.then(
        (value) => this.succeeded(run, value, true),
        (error) => this.raised(run, error, true),
      )
    } else this.succeeded(run, result, false)
  }

  /** close(): running handlers are no longer ours to count; their results are dropped. */
  close(): void {
    this.closed = true
    this.running.clear()
    this.perPeer.clear()
    this.count = 0
    this.bytes = 0
  }

  /** Why `peer` may not start a call of `bytes` argument bytes now, or undefined if it may. */
  private admit(peer: string, bytes: number): string | undefined {
    const { maxConcurrent, maxConcurrentBytes } = this.limits
    if (this.count >= maxConcurrent) return `${this.count} handlers are already running (maxConcurrent)`
    if (this.bytes + bytes > maxConcurrentBytes) return `running handlers hold ${this.bytes} bytes of arguments (maxConcurrentBytes)`
    const mine = this.perPeer.get(peer)
    if (mine === undefined) return undefined
    const busy = this.perPeer.size
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
    let set = this.running.get(run.link)
    if (set === undefined) this.running.set(run.link, (set = new Set()))
    set.add(run)
    const share = this.perPeer.get(run.ctx.from)
    if (share === undefined) this.perPeer.set(run.ctx.from, { count: 1, bytes: run.bytes })
    else {
      share.count++
      share.bytes += run.bytes
    }
    this.count++
    this.bytes += run.bytes
  }

  /** The handler has settled: it no longer counts. False after close(), when its result is dropped. */
  private end(run: Running): boolean {
    if (this.closed) return false
    const set = this.running.get(run.link)
    if (set === undefined || !set.delete(run)) return false
    if (set.size === 0) this.running.delete(run.link)
    const share = this.perPeer.get(run.ctx.from)!
    if (--share.count === 0) this.perPeer.delete(run.ctx.from)
    else share.bytes -= run.bytes
    this.count--
    this.bytes -= run.bytes
    return true
  }

  /** A handler returned `result` (or its promise, entered in the table, resolved to it): answer a CALL. */
  private succeeded(run: Running, result: unknown, entered: boolean): void {
    if ((entered && !this.end(run)) || run.id === undefined) return
    const { method, from } = run.ctx
    let encoded: Uint8Array
    try {
      encoded = this.host.encode(result, method)
    } catch (error) {
      if (error instanceof BilateralError) return this.refuse(run.link, method, run.id, error.code, error.message)
      return this.refuse(run.link, method, run.id, 'BAD_REPLY', `the result of ${method} cannot be encoded: ${(error as Error).message}`)
    }
    this.answer(run.link, from, [encodeReply(run.id), encoded])
  }

  /** A handler threw or rejected: answer a CALL with REMOTE, report a CAST. */
  private raised(run: Running, error: unknown, entered: boolean): void {
    if (entered && !this.end(run)) return
    const e = error instanceof Error ? error : new Error(String(error))
    if (run.id === undefined) {
      this.host.castError(error ?? new BilateralError('REMOTE', e.message, { peer: run.ctx.from }), run.ctx)
      return
    }
    this.answer(run.link, run.ctx.from, [
      encodeError(run.id, 'REMOTE', clip(String(e.name), this.errorName), clip(String(e.message), this.errorMessage), ownCode(error)),
    ])
  }

  /** A CALL that cannot be served is answered ERROR `code`; a CAST that cannot is reported (`cast:error`). */
  private refuse(link: Link, method: string, id: number | undefined, code: string, message: string, cause?: unknown): void {
    const peer = link.peer
    if (id === undefined) this.host.castError(cause ?? new BilateralError(code, message, { peer }), { from: peer, method, cast: true })
    else this.answer(link, peer, [encodeError(id, code, 'BilateralError', clip(message, this.errorMessage))])
  }

  /** On the link the call came in on, or another link to the same process of the caller; else nowhere. */
  private answer(link: Link, peer: string, frame: Uint8Array[]): void {
    if (this.closed) return
    if (link.state !== 'closed') return link.post(frame, this.answerTag)
    const live = this.host.liveLink(peer)
    if (live !== undefined && sameProcess(live, link, false)) return live.post(frame, this.answerTag)
    this.dropped++
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

/** A thrown error's own string `code` (as Node's and many libraries' errors have). */
function ownCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code
  return typeof code === 'string' && code.length <= 64 ? code : undefined
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}
