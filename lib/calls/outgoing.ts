/**
 * The calls we made: one entry per outstanding `call()` or `stream()`,
 * however many peers it addresses, each peer bound to the link its CALL went
 * out on, and one timer for all of them. Deadlines of calls with the same
 * timeout are monotonic in order of insertion, so each distinct timeout
 * value keeps a FIFO and the single timer is armed for the earliest head.
 *
 * Each result goes to the call's sink as it settles (results.ts, stream.ts),
 * exactly once per addressed peer. A call ends when every peer has one, or
 * earlier: its `until` policy is met or can no longer be (policy.ts), or one
 * of its signals aborts. Then every peer still to answer gets CANCELLED, and
 * a CANCEL on its link if the peer reads them (PROTOCOL.md 8.1).
 *
 * A REPLY or ERROR settles a peer's entry only if it comes from the link the
 * CALL went out on, or another link to the same incarnation of that peer (a
 * cross-dial moved the pair to another connection): an answer from another
 * process under the same name is not an answer to our call.
 */
import type { Clock } from '../clock.js'
import { BilateralError, RemoteError, clip, withCallerStack, type ErrorCode } from '../errors.js'
import type { Link, SendTag, Unsent } from '../mesh/link.js'
import type { Codec } from '../wire/codec.js'
import { FrameType, MAX_CODE_LENGTH, MAX_NAME_BYTES, MAX_VIA, PEER_ERROR_CODES, encodeCancel, type Frame } from '../wire/frames.js'
import type { Policy } from './policy.js'
import { report, type OutboundCall, type OutboundResult } from '../observe/interceptors.js'
import type { CallResult, CallSink } from './results.js'

type ErrorFrame = Extract<Frame, { type: FrameType.ERROR }>

/** Longest remote error message kept, characters (a peer may send up to 64 KiB). */
const MAX_REMOTE_MESSAGE = 16 * 1024
const MAX_ID = 0xffffffff

/** How a call is made: besides its peers, how long it waits, when it may stop early, what may cancel it. */
export interface CallPlan {
  /** The method called, for the messages of its errors. */
  readonly method: string
  readonly timeout: number
  /** Results known before anything is sent (NOT_CONNECTED, OVERLOADED). */
  readonly early: readonly CallResult[]
  readonly site: { stack?: string }
  readonly sink: CallSink
  readonly policy?: Policy
  /** Aborting any of them cancels the call. */
  readonly signals?: readonly AbortSignal[]
  /** Outbound interceptors' observers, told of each result (undefined, the common case, costs one check a result). */
  readonly observers?: readonly OutboundResult[] | undefined
  /** The call as those interceptors saw it (given with `observers`). */
  readonly intercepted?: OutboundCall | undefined
}

/** One outstanding call: which peers it still waits for, on which links. */
class Call implements SendTag {
  /** The peer and link while one is left (most calls go to one peer, and need no Map)… */
  onePeer: string | undefined
  oneLink: Link | undefined
  /** …or each peer still to answer and the link its CALL went on, while several are. */
  many: Map<string, Link> | undefined
  /** Successful replies so far. */
  ok = 0
  /** Every result so far, for an `until` function. */
  readonly seen: CallResult[] | undefined
  /** Whether its CALLs were handed to the links (a call cancelled before that sends no CANCEL). */
  sent = false
  /** Stopping: the peers left are being cancelled, timed out or closed, and the policy is not asked again. */
  stopping = false
  /** Its sink has ended: nothing more may happen to it (a policy's function may have ended it while it ran). */
  finished = false
  /** What the `until` function threw. */
  failure: unknown = undefined
  /** The signals that may cancel it, while they are watched for it. */
  signals: readonly AbortSignal[] | undefined
  /** The timer queue it waits in. */
  queue: Queue | undefined
  /** Interceptors' observers to tell of each result, the call they saw, and when it began (clock ms). */
  observers: readonly OutboundResult[] | undefined = undefined
  intercepted: OutboundCall | undefined = undefined
  began = 0

  constructor(
    private readonly table: OutgoingCalls,
    readonly id: number,
    readonly deadline: number,
    readonly sink: CallSink,
    readonly policy: Policy | undefined,
    /** Holds the caller's stack, captured when the call was made. */
    readonly site: { stack?: string },
    readonly method: string,
  ) {
    this.seen = policy?.needsResults === true ? [] : undefined
  }

  /** The batch holding our CALL to `link.peer` was not sent. */
  unsent(link: Link, why: Unsent): void {
    const peer = link.peer
    const error =
      why === 'backlog'
        ? new BilateralError('OVERLOADED', `${peer} is not reading: ${link.backlog} bytes already wait for it (maxQueuedBytes)`, { peer })
        : new BilateralError('NOT_CONNECTED', `could not send to ${peer}: ${why === 'full' ? 'its queue is full' : 'its link closed'}`, {
            peer,
          })
    this.table.fail(this.id, peer, error)
  }

  /** The link the CALL to `peer` went on, if the call still waits for `peer`. */
  linkOf(peer: string): Link | undefined {
    return this.onePeer === peer ? this.oneLink : this.many?.get(peer)
  }

  /** The peers still to answer, as a copy that settling them one by one cannot disturb. */
  waiting(): string[] {
    return this.onePeer !== undefined ? [this.onePeer] : this.many === undefined ? [] : [...this.many.keys()]
  }

  /** How many peers are still to answer. */
  get pending(): number {
    return this.onePeer !== undefined ? 1 : (this.many?.size ?? 0)
  }

  /** Stop waiting for `peer`; false if the call did not wait for it. */
  take(peer: string): boolean {
    if (this.onePeer === peer) {
      this.onePeer = undefined
      this.oneLink = undefined
      return true
    }
    return this.many?.delete(peer) === true
  }

  get done(): boolean {
    return this.onePeer === undefined && (this.many === undefined || this.many.size === 0)
  }
}

interface Queue {
  readonly timeout: number
  ids: number[]
  deadlines: number[]
  head: number
  /** Calls in it still outstanding: at 0 the queue goes, whether its calls were answered, cancelled or timed out. */
  live: number
}

export class OutgoingCalls {
  private readonly calls = new Map<number, Call>()
  private readonly queues = new Map<number, Queue>()
  /** Calls outstanding per peer (for maxInflight). */
  private readonly perPeer = new Map<string, number>()
  /** Each signal watched, with the outstanding calls it may cancel. */
  private readonly watched = new Map<AbortSignal, Set<Call>>()
  private nextId = 1
  private timer: unknown = undefined
  private armedFor = Infinity
  /** Answers that settled nothing: to no call of ours (one cancelled, timed out or never made), from a peer already answered, or from another process under the name. */
  stray = 0

  constructor(
    private readonly clock: Clock,
    private readonly codec: Codec,
  ) {}

  /** Number of outstanding calls. */
  get size(): number {
    return this.calls.size
  }

  /** Number of timer queues still held (for leak checks). */
  get queueCount(): number {
    return this.queues.size
  }

  /** Signals watched for outstanding calls (for leak checks). */
  get signalsWatched(): number {
    return this.watched.size
  }

  /** Peers with calls outstanding (for leak checks). */
  get peersWaited(): number {
    return this.perPeer.size
  }

  /** Calls outstanding to `peer`. */
  inflight(peer: string): number {
    return this.perPeer.get(peer) ?? 0
  }

  /**
   * Track a call to `targets` (each peer with the link its CALL goes on).
   * The plan's early results reach its sink first. Returns the call's id and
   * its tag for the links, or undefined if nothing is to be sent: no target,
   * a signal already aborted, or an `until` that is met (or can no longer
   * be) by the early results alone; the targets are then CANCELLED.
   */
  start(targets: readonly Link[], plan: CallPlan): { id: number; tag: SendTag } | undefined {
    const { sink, early } = plan
    if (targets.length === 0) {
      for (const result of early) {
        if (plan.observers !== undefined) report(plan.observers, result, 0, 0, plan.intercepted!)
        sink.result(result)
      }
      let failure: unknown
      try {
        // A function sees even a call that reached no one.
        if (plan.policy?.needsResults === true) plan.policy.done({ ok: 0, pending: 0, results: early })
      } catch (error) {
        failure = error
      }
      sink.end(failure)
      return undefined
    }
    const id = this.allocateId()
    const now = this.clock.now()
    const deadline = now + plan.timeout
    const call = new Call(this, id, deadline, sink, plan.policy, plan.site, plan.method)
    if (plan.observers !== undefined) {
      call.observers = plan.observers
      call.intercepted = plan.intercepted
      call.began = now
    }
    if (targets.length === 1) {
      call.onePeer = targets[0]!.peer
      call.oneLink = targets[0]
    } else {
      call.many = new Map()
      for (const link of targets) call.many.set(link.peer, link)
    }
    for (const link of targets) this.perPeer.set(link.peer, (this.perPeer.get(link.peer) ?? 0) + 1)
    this.calls.set(id, call)
    for (const result of early) this.record(call, result)
    const aborted = plan.signals?.find((signal) => signal.aborted)
    if (aborted !== undefined) this.cancel(call, abortMessage(aborted))
    else {
      // Watched before the policy is asked: an until function may abort the signal itself.
      if (plan.signals !== undefined && plan.signals.length > 0) this.watch(call, plan.signals)
      // A quorum may be out of reach before anything is sent (more replies wanted than peers); a function is first asked once there is a result.
      if (call.policy !== undefined && (early.length > 0 || !call.policy.needsResults)) this.check(call)
    }
    if (!this.calls.has(id)) return undefined
    let queue = this.queues.get(plan.timeout)
    if (queue === undefined) {
      queue = { timeout: plan.timeout, ids: [], deadlines: [], head: 0, live: 0 }
      this.queues.set(plan.timeout, queue)
    }
    queue.ids.push(id)
    queue.deadlines.push(deadline)
    queue.live++
    call.queue = queue
    if (deadline < this.armedFor) this.arm(deadline)
    call.sent = true
    return { id, tag: call }
  }

  /** Cancel call `id`: every peer still to answer gets CANCELLED, and a CANCEL on the link its CALL went on. */
  cancelCall(id: number, why: string): void {
    const call = this.calls.get(id)
    if (call !== undefined) this.cancel(call, why)
  }

  /** The encoded size of the reply being settled, for the interceptors told of it. */
  private replyBytes = 0

  /** A REPLY on `link` to call `id`. */
  reply(link: Link, id: number, body: Uint8Array): void {
    const call = this.answerable(link, id)
    if (call === undefined) return
    this.replyBytes = body.byteLength
    let value: unknown
    try {
      value = this.codec.decodeBody(body)
    } catch (error) {
      return this.fail(
        id,
        link.peer,
        new BilateralError('BAD_REPLY', `undecodable reply from ${link.peer}`, { peer: link.peer, cause: error }),
        link.arrived,
      )
    }
    this.settle(call, link.peer, { from: link.peer, ok: true, reply: value }, link.arrived)
  }

  /** An ERROR on `link` for its call. Only the codes a peer may send are taken as such. */
  error(link: Link, frame: ErrorFrame): void {
    const { id, code } = frame
    if (this.answerable(link, id) === undefined) return
    const peer = link.peer
    const text = clip(frame.message, MAX_REMOTE_MESSAGE)
    let error: BilateralError
    if (code === 'REMOTE') {
      error = new RemoteError(peer, {
        name: clip(frame.name, 256),
        message: text,
        code: frame.remoteCode === undefined ? undefined : clip(frame.remoteCode, MAX_CODE_LENGTH),
        details: this.decoded(frame.details),
        via: this.via(frame.via),
      })
    } else if (PEER_ERROR_CODES.has(code)) error = new BilateralError(code as ErrorCode, text, { peer })
    else
      error = new BilateralError(
        'PROTOCOL',
        `${peer} answered with error code ${JSON.stringify(clip(code, MAX_CODE_LENGTH))}, which peers may not send: ${text}`,
        { peer },
      )
    this.fail(id, peer, error, link.arrived)
  }

  /** An ERROR's optional body field (its details, its path), decoded under the body limits; undefined if absent or undecodable. */
  private decoded(body: Uint8Array | undefined): unknown {
    if (body === undefined) return undefined
    try {
      return this.codec.decodeBody(body)
    } catch {
      return undefined
    }
  }

  /** The peers a remote error came through, from an ERROR's `via`: names only, at most MAX_VIA; else none. */
  private via(body: Uint8Array | undefined): string[] | undefined {
    const names = this.decoded(body)
    if (!Array.isArray(names) || names.length > MAX_VIA) return undefined
    const name = (n: unknown): boolean => typeof n === 'string' && n.length > 0 && Buffer.byteLength(n) <= MAX_NAME_BYTES
    return names.every(name) ? (names as string[]) : undefined
  }

  /** An error entry for `peer` in call `id`. */
  fail(id: number, peer: string, error: BilateralError, at?: number): void {
    const call = this.calls.get(id)
    if (call === undefined) return
    this.settle(call, peer, { from: peer, ok: false, error: withCallerStack(error, call.site) }, at)
  }

  /** Fail every call that waits for `peer` (for example, it left). */
  failPeer(peer: string, code: ErrorCode, message: string): void {
    if (!this.perPeer.has(peer)) return
    for (const call of [...this.calls.values()]) {
      if (call.linkOf(peer) !== undefined) this.fail(call.id, peer, new BilateralError(code, message, { peer }))
    }
  }

  /** Settle every call: remaining peers get `code`. Used by close(). */
  failAll(code: ErrorCode, message: string): void {
    for (const call of [...this.calls.values()]) {
      call.stopping = true
      for (const peer of call.waiting()) this.fail(call.id, peer, new BilateralError(code, message, { peer }))
    }
    this.queues.clear()
    this.disarm()
  }

  /** The call `id` if `link` may answer it for its peer: the link it went on, or one to the same incarnation. */
  private answerable(link: Link, id: number): Call | undefined {
    const call = this.calls.get(id)
    const sent = call?.linkOf(link.peer)
    if (call === undefined || sent === undefined || !sameProcess(sent, link, true)) {
      this.stray++
      return undefined
    }
    return call
  }

  /** `at`: when the message that settles it arrived (clock ms), if known, for its interceptors. */
  private settle(call: Call, peer: string, result: CallResult, at?: number): void {
    if (!call.take(peer)) return
    const n = (this.perPeer.get(peer) ?? 1) - 1
    if (n === 0) this.perPeer.delete(peer)
    else this.perPeer.set(peer, n)
    this.record(call, result, at)
    if (call.done) this.finish(call)
    else if (call.policy !== undefined && !call.stopping) this.check(call)
  }

  /** A result reaches the sink and the tally. */
  private record(call: Call, result: CallResult, at?: number): void {
    if (result.ok) call.ok++
    call.seen?.push(result)
    if (call.observers !== undefined) {
      // Never negative: a peer may pack an answer to a call made while its message was being handled.
      report(call.observers, result, Math.max(0, (at ?? this.clock.now()) - call.began), result.ok ? this.replyBytes : 0, call.intercepted!)
    }
    call.sink.result(result)
  }

  /** Ask the call's `until` whether it is done; if so, cancel the peers left. */
  private check(call: Call): void {
    let stop: boolean
    try {
      stop = call.policy!.done({ ok: call.ok, pending: call.pending, results: call.seen ?? [] })
    } catch (error) {
      call.failure = error
      stop = true
    }
    // The function may have ended the call itself (aborted its signal, left its stream, closed the node).
    if (!stop || call.finished) return
    if (call.done) return this.finish(call)
    this.cancel(call, call.failure !== undefined ? 'its until function threw' : 'its until condition was settled without this peer')
  }

  /** Every peer still to answer gets CANCELLED (and, if the CALL went out to a peer that reads it, a CANCEL). */
  private cancel(call: Call, why: string): void {
    call.stopping = true
    for (const peer of call.waiting()) {
      const link = call.linkOf(peer)
      if (call.sent && link !== undefined && link.lifecycle && link.state !== 'closed') link.post([encodeCancel(call.id)])
      this.fail(call.id, peer, new BilateralError('CANCELLED', `the call to ${peer} was cancelled: ${why}`, { peer }))
    }
  }

  /**
   * Watch the call's signals. A signal gets one listener however many calls
   * it may cancel (a caller often shares one among many calls, and an
   * AbortSignal warns beyond 10 listeners and removes each in linear time).
   */
  private watch(call: Call, signals: readonly AbortSignal[]): void {
    call.signals = signals
    for (const signal of signals) {
      let calls = this.watched.get(signal)
      if (calls === undefined) {
        this.watched.set(signal, (calls = new Set()))
        signal.addEventListener('abort', this.aborted, { once: true })
      }
      calls.add(call)
    }
  }

  private unwatch(call: Call): void {
    for (const signal of call.signals!) {
      const calls = this.watched.get(signal)
      if (calls === undefined || !calls.delete(call) || calls.size > 0) continue
      this.watched.delete(signal)
      signal.removeEventListener('abort', this.aborted)
    }
    call.signals = undefined
  }

  /** A watched signal aborted: every call it may cancel is cancelled. */
  private readonly aborted = (event: Event): void => {
    const signal = event.target as AbortSignal
    const calls = this.watched.get(signal)
    if (calls === undefined) return
    this.watched.delete(signal)
    const why = abortMessage(signal)
    for (const call of [...calls]) this.cancel(call, why)
  }

  private finish(call: Call): void {
    if (call.finished) return
    call.finished = true
    this.calls.delete(call.id)
    if (call.signals !== undefined) this.unwatch(call)
    const queue = call.queue
    if (queue !== undefined && --queue.live === 0 && this.queues.get(queue.timeout) === queue) {
      this.queues.delete(queue.timeout)
      if (this.queues.size === 0) this.disarm()
    }
    call.sink.end(call.failure)
  }

  /** A fresh call id that no outstanding call uses. */
  private allocateId(): number {
    let id = this.nextId
    while (this.calls.has(id)) id = id === MAX_ID ? 1 : id + 1
    this.nextId = id === MAX_ID ? 1 : id + 1
    return id
  }

  private expire = (): void => {
    this.timer = undefined
    this.armedFor = Infinity
    const now = this.clock.now()
    let next = Infinity
    for (const [timeout, queue] of this.queues) {
      while (queue.head < queue.ids.length && queue.deadlines[queue.head]! <= now) {
        const call = this.calls.get(queue.ids[queue.head]!)
        queue.head++
        if (call === undefined || call.deadline > now) continue
        // Every peer left times out: a policy is not asked after each, which would call the rest CANCELLED.
        call.stopping = true
        for (const peer of call.waiting()) {
          const error = new BilateralError('TIMEOUT', `no reply from ${peer} to ${call.method} within ${Math.round(timeout)} ms`, { peer })
          this.fail(call.id, peer, error)
        }
      }
      this.compact(timeout, queue)
      if (queue.head < queue.ids.length) next = Math.min(next, queue.deadlines[queue.head]!)
    }
    if (next !== Infinity) this.arm(next)
  }

  /** Drop answered calls from the front so queues do not grow without bound. */
  private compact(timeout: number, queue: Queue): void {
    while (queue.head < queue.ids.length && !this.calls.has(queue.ids[queue.head]!)) queue.head++
    if (queue.head === queue.ids.length) {
      if (this.queues.get(timeout) === queue) this.queues.delete(timeout)
    } else if (queue.head > 1024 && queue.head * 2 > queue.ids.length) {
      queue.ids = queue.ids.slice(queue.head)
      queue.deadlines = queue.deadlines.slice(queue.head)
      queue.head = 0
    }
  }

  private arm(deadline: number): void {
    this.disarm()
    this.armedFor = deadline
    this.timer = this.clock.setTimer(this.expire, Math.max(0, deadline - this.clock.now()))
  }

  private disarm(): void {
    if (this.timer !== undefined) this.clock.clearTimer(this.timer)
    this.timer = undefined
    this.armedFor = Infinity
  }
}

/**
 * Are `a` and `b` links to the same run of the peer's process? The same link
 * is; two links whose JOIN/STAY carried equal incarnations are. A peer of an
 * earlier release announces none: `assume` says what to take then (an
 * answer from it is accepted on any of its links, as that release expects;
 * an answer to it goes only on the link its call came in on).
 */
export function sameProcess(a: Link, b: Link, assume: boolean): boolean {
  if (a === b) return true
  if (a.incarnation === undefined || b.incarnation === undefined) return assume && a.incarnation === b.incarnation
  return Buffer.compare(a.incarnation, b.incarnation) === 0
}

/** Why a signal aborted, for the CANCELLED entries it leaves: its reason's message, or the reason itself. */
export function abortMessage(signal: AbortSignal): string {
  const reason: unknown = signal.reason
  try {
    if (reason instanceof Error) return clip(String(reason.message), 200)
    return reason === undefined ? 'its signal was aborted' : clip(String(reason), 200)
  } catch {
    // A reason without a string form (a null-prototype object, a throwing toString).
    return 'its signal was aborted'
  }
}
