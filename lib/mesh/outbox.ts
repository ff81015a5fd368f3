/**
 * Per-link send coalescing. Frames posted for one peer during one turn of
 * the event loop leave as a single ZeroMQ message at the end of the turn (a
 * microtask), packed several to a part (`wire/pack.ts`), so many calls or
 * replies in flight pay ZeroMQ's per-message and per-part costs once. A
 * lone call is not delayed: it leaves as soon as the code that made it
 * yields. PROTOCOL.md allows any number of frames per message; a batch is
 * capped so one message stays small.
 *
 * The outbox knows nothing of what it carries: whoever posts a frame may
 * give a tag, and the tags of a batch go with it, to be told if it cannot
 * be sent.
 */
import { packFrames } from '../wire/pack.js'

/** Flush early once a batch holds this many frames… */
export const MAX_FRAMES = 512
/** …or this many bytes. */
export const MAX_BYTES = 256 * 1024

/** One message's worth of frames, packed, with the tags of its frames and who waits for it to be accepted. */
export interface Batch<T> {
  readonly parts: Uint8Array[]
  readonly bytes: number
  readonly tags: readonly T[]
  readonly settled: ((accepted: boolean) => void) | undefined
}

export class Outbox<T> {
  private frames: (readonly Uint8Array[])[] = []
  private bytes = 0
  private tags: T[] = []
  private scheduled = false
  private waiting: { promise: Promise<boolean>; resolve: (accepted: boolean) => void } | undefined
  /** Whether the last batch someone waited for was accepted, for callers that ask after it already left. */
  private last: Promise<boolean> = Promise.resolve(true)

  /** @param sink takes each batch; calls its `settled` with whether it was accepted. */
  constructor(private readonly sink: (batch: Batch<T>) => void) {}

  /** The most bytes packed into one part (a peer's maxMessageSize applies per part); 0 packs nothing. */
  partLimit = 0

  /** Add one frame (envelope and optional body), with a tag to be told if its batch is not accepted. */
  post(frame: readonly Uint8Array[], tag?: T): void {
    this.frames.push(frame)
    this.bytes += frame[0]!.length + (frame[1]?.length ?? 0)
    if (tag !== undefined) this.tags.push(tag)
    if (this.frames.length >= MAX_FRAMES || this.bytes >= MAX_BYTES) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(this.flush)
    }
  }

  /** Resolves with whether the batch holding everything posted so far was accepted. */
  whenFlushed(): Promise<boolean> {
    if (this.frames.length === 0) return this.last
    if (this.waiting === undefined) {
      let resolve!: (accepted: boolean) => void
      const promise = new Promise<boolean>((r) => (resolve = r))
      this.waiting = { promise, resolve }
    }
    return this.waiting.promise
  }

  /** Hand over what is pending now (also used before a control frame, to keep order). */
  flush = (): void => {
    this.scheduled = false
    if (this.frames.length === 0) return
    const { frames, tags, bytes, waiting } = this
    this.frames = []
    this.tags = []
    this.bytes = 0
    this.waiting = undefined
    // A batch nobody waits for costs no promise: the sink is not asked to say how it went.
    if (waiting !== undefined) this.last = waiting.promise
    this.sink({ parts: packFrames(frames, this.partLimit), bytes, tags, settled: waiting?.resolve })
  }
}
