/**
 * `stream()`: a call's results as an async iterable, each addressed peer's
 * once, as it settles (those known before anything was sent, NOT_CONNECTED
 * and OVERLOADED, first). Leaving the loop early (`break`, `return`, a
 * throw) cancels every peer still to answer, on the wire too.
 */
import type { CallResult, CallSink } from './results.js'

export class CallStream<R = unknown> implements AsyncIterableIterator<CallResult<R>> {
  /** Every addressed peer, known before the first result. */
  readonly targets: readonly string[]
  private readonly queue: CallResult<R>[] = []
  private head = 0
  private ended = false
  private failure: unknown = undefined
  private waiter: { resolve: (r: IteratorResult<CallResult<R>>) => void; reject: (e: unknown) => void } | undefined
  /** Set once the call is under way: cancels the peers still to answer. */
  private cancelRest: ((why: string) => void) | undefined
  private left = false

  /** @internal The sink the call's results arrive through. */
  readonly sink: CallSink

  /** @internal Made by `Bilateral.stream()`. */
  constructor(targets: readonly string[]) {
    this.targets = targets
    this.sink = {
      result: (result) => {
        if (this.left) return
        const waiter = this.waiter
        if (waiter !== undefined) {
          this.waiter = undefined
          waiter.resolve({ value: result as CallResult<R>, done: false })
        } else this.queue.push(result as CallResult<R>)
      },
      end: (failure) => {
        this.ended = true
        this.failure = failure
        this.cancelRest = undefined
        const waiter = this.waiter
        if (waiter === undefined) return
        this.waiter = undefined
        if (failure !== undefined && !this.left) waiter.reject(failure)
        else waiter.resolve({ value: undefined, done: true })
      },
    }
  }

  /** @internal How to cancel the call, once it has started. */
  started(cancel: (why: string) => void): void {
    if (!this.ended) this.cancelRest = cancel
  }

  /** Cancel every peer still to answer: each gets a CANCELLED result, still yielded. */
  cancel(): void {
    this.cancelRest?.('the stream was cancelled')
  }

  next(): Promise<IteratorResult<CallResult<R>>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head]!
      this.queue[this.head++] = undefined as unknown as CallResult<R>
      if (this.head === this.queue.length) {
        this.queue.length = 0
        this.head = 0
      }
      return Promise.resolve({ value, done: false })
    }
    if (this.ended || this.left) {
      const failure = this.failure
      this.failure = undefined
      return failure !== undefined && !this.left ? Promise.reject(failure) : Promise.resolve({ value: undefined, done: true })
    }
    if (this.waiter !== undefined) return Promise.reject(new Error('stream(): next() called again before the previous next() settled'))
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }))
  }

  /** Leaving the loop: the peers still to answer are cancelled, and nothing more is yielded. */
  return(): Promise<IteratorResult<CallResult<R>>> {
    this.leave()
    return Promise.resolve({ value: undefined, done: true })
  }

  /** An exception in the loop: as {@link return}. */
  throw(error?: unknown): Promise<IteratorResult<CallResult<R>>> {
    this.leave()
    return Promise.reject(error)
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  private leave(): void {
    if (this.left) return
    this.left = true
    this.queue.length = 0
    this.head = 0
    this.cancelRest?.('its stream() loop was left')
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.resolve({ value: undefined, done: true })
  }
}
