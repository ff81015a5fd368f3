/**
 * The pending-call table: one entry per outstanding `call()`, however many
 * peers it addresses, and one timer for all of them. Deadlines of calls with
 * the same timeout are monotonic in order of insertion, so each distinct
 * timeout value keeps a FIFO and the single timer is armed for the earliest
 * head; no per-call timer or heap is needed.
 */
import type { Clock } from './clock.js'
import { BilateralError, withCallerStack, type ErrorCode } from './errors.js'

export type CallResult<R = unknown> = { from: string; ok: true; reply: R } | { from: string; ok: false; error: BilateralError }

interface Entry {
  readonly id: number
  readonly deadline: number
  /**
   * Peers still to answer: the name itself while one is left (most calls go
   * to one peer, and need no Set), a Set while several are, undefined once
   * all have answered.
   */
  waiting: string | Set<string> | undefined
  readonly replies: CallResult[]
  readonly errors: CallResult[]
  readonly resolve: (results: CallResult[]) => void
  /** Holds the caller's stack, captured when the call was made. */
  readonly site: { stack?: string }
}

interface Queue {
  ids: number[]
  deadlines: number[]
  head: number
}

const MAX_ID = 0xffffffff

export class PendingCalls {
  private readonly entries = new Map<number, Entry>()
  private readonly queues = new Map<number, Queue>()
  private nextId = 1
  private timer: unknown = undefined
  private armedFor = Infinity

  /** @param peerDone told each time one peer's part of a call is settled, however it ended. */
  constructor(
    private readonly clock: Clock,
    private readonly peerDone: (peer: string) => void = () => {},
  ) {}

  /** Number of outstanding calls. */
  get size(): number {
    return this.entries.size
  }

  /** Number of timer queues still held (for leak checks). */
  get queueCount(): number {
    return this.queues.size
  }

  /** A fresh call id that no pending call uses. */
  allocateId(): number {
    let id = this.nextId
    while (this.entries.has(id)) id = id === MAX_ID ? 1 : id + 1
    this.nextId = id === MAX_ID ? 1 : id + 1
    return id
  }

  /**
   * Track a call to `peers`; `resolve` gets the results once every peer has
   * answered or the timeout has passed. `early` are results known at once
   * (for example NOT_CONNECTED).
   */
  add(
    id: number,
    peers: readonly string[],
    timeout: number,
    early: CallResult[],
    site: { stack?: string },
    resolve: (results: CallResult[]) => void,
  ): void {
    if (peers.length === 0) {
      resolve(early)
      return
    }
    const deadline = this.clock.now() + timeout
    const waiting = peers.length === 1 ? peers[0] : new Set(peers)
    this.entries.set(id, { id, deadline, waiting, replies: [], errors: early, resolve, site })
    let queue = this.queues.get(timeout)
    if (queue === undefined) {
      queue = { ids: [], deadlines: [], head: 0 }
      this.queues.set(timeout, queue)
    }
    queue.ids.push(id)
    queue.deadlines.push(deadline)
    if (deadline < this.armedFor) this.arm(deadline)
  }

  /** A reply from `peer` to call `id`. Ignored when the call is gone or `peer` already answered. */
  reply(id: number, peer: string, reply: unknown): void {
    const entry = this.take(id, peer)
    if (entry === undefined) return
    entry.replies.push({ from: peer, ok: true, reply })
    this.settleIfDone(entry)
  }

  /** An error entry for `peer` in call `id`. */
  fail(id: number, peer: string, error: BilateralError): void {
    const entry = this.take(id, peer)
    if (entry === undefined) return
    entry.errors.push({ from: peer, ok: false, error: withCallerStack(error, entry.site) })
    this.settleIfDone(entry)
  }

  /** Does call `id` still wait for `peer`? */
  isWaitingFor(id: number, peer: string): boolean {
    const entry = this.entries.get(id)
    return entry !== undefined && waitsFor(entry, peer)
  }

  /** Fail every peer of every call that waits for `peer` (for example, it left). */
  failPeer(peer: string, code: ErrorCode, message: string): void {
    for (const entry of [...this.entries.values()]) {
      if (waitsFor(entry, peer)) this.fail(entry.id, peer, new BilateralError(code, message, { peer }))
    }
  }

  /** Settle every call: remaining peers get `code`. Used by close(). */
  failAll(code: ErrorCode, message: string): void {
    for (const entry of [...this.entries.values()]) {
      for (const peer of stillWaiting(entry)) this.fail(entry.id, peer, new BilateralError(code, message, { peer }))
    }
    this.queues.clear()
    this.disarm()
  }

  private take(id: number, peer: string): Entry | undefined {
    const entry = this.entries.get(id)
    if (entry === undefined) return undefined
    const waiting = entry.waiting
    if (waiting === peer) entry.waiting = undefined
    else if (typeof waiting !== 'object' || !waiting.delete(peer)) return undefined
    else if (waiting.size === 0) entry.waiting = undefined
    this.peerDone(peer)
    return entry
  }

  private settleIfDone(entry: Entry): void {
    if (entry.waiting !== undefined) return
    this.entries.delete(entry.id)
    const results = entry.replies
    for (const e of entry.errors) results.push(e)
    entry.resolve(results)
  }

  private expire = (): void => {
    this.timer = undefined
    this.armedFor = Infinity
    const now = this.clock.now()
    let next = Infinity
    for (const [timeout, queue] of this.queues) {
      while (queue.head < queue.ids.length && queue.deadlines[queue.head]! <= now) {
        const entry = this.entries.get(queue.ids[queue.head]!)
        queue.head++
        if (entry === undefined || entry.deadline > now) continue
        for (const peer of stillWaiting(entry)) {
          this.fail(entry.id, peer, new BilateralError('TIMEOUT', `no reply from ${peer} in time`, { peer }))
        }
      }
      this.compact(timeout, queue)
      if (queue.head < queue.ids.length) next = Math.min(next, queue.deadlines[queue.head]!)
    }
    if (next !== Infinity) this.arm(next)
  }

  /** Drop answered calls from the front so queues do not grow without bound. */
  private compact(timeout: number, queue: Queue): void {
    while (queue.head < queue.ids.length && !this.entries.has(queue.ids[queue.head]!)) queue.head++
    if (queue.head === queue.ids.length) {
      this.queues.delete(timeout)
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

function waitsFor(entry: Entry, peer: string): boolean {
  const waiting = entry.waiting
  return waiting === peer || (typeof waiting === 'object' && waiting.has(peer))
}

/** The peers `entry` still waits for, as a copy that failing them one by one cannot disturb. */
function stillWaiting(entry: Entry): string[] {
  const waiting = entry.waiting
  return waiting === undefined ? [] : typeof waiting === 'string' ? [waiting] : [...waiting]
}
