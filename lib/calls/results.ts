/**
 * What a call gives back: one result per addressed peer, and the ways they
 * are handed over. `call()` collects them ({@link Collector}); `request()`
 * hands over its one peer's ({@link Single}); `stream()` yields each as it
 * settles (`stream.ts`). Both are fed by the same table of
 * outgoing calls, through {@link CallSink}.
 */
import type { BilateralError } from '../errors.js'

export type CallResult<R = unknown> = { from: string; ok: true; reply: R } | { from: string; ok: false; error: BilateralError }

/** Where a call's results go. */
export interface CallSink {
  /** One peer's result, as it settles: each addressed peer exactly once. */
  result(result: CallResult): void
  /** Every peer has its result. `failure`: the `until` function threw it. */
  end(failure?: unknown): void
}

/** `call()`'s sink: replies in arrival order, then errors in the order they came, once every peer has one. */
export class Collector implements CallSink {
  private readonly replies: CallResult[] = []
  private readonly errors: CallResult[] = []

  constructor(
    private readonly resolve: (results: CallResult[]) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  result(result: CallResult): void {
    if (result.ok) this.replies.push(result)
    else this.errors.push(result)
  }

  end(failure?: unknown): void {
    if (failure !== undefined) return this.reject(failure)
    const results = this.replies
    for (const e of this.errors) results.push(e)
    this.resolve(results)
  }
}

/** `request()`'s sink: one peer's reply, or its error thrown. */
export class Single implements CallSink {
  private last: CallResult | undefined

  constructor(
    private readonly resolve: (reply: unknown) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  result(result: CallResult): void {
    this.last = result
  }

  end(failure?: unknown): void {
    const last = this.last
    if (failure !== undefined) this.reject(failure)
    else if (last === undefined) this.reject(new Error('request(): the call ended with no result'))
    else if (last.ok) this.resolve(last.reply)
    else this.reject(last.error)
  }
}
