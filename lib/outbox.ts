/**
 * Per-link send coalescing. Frames posted for one peer during one turn of
 * the event loop leave as a single ZeroMQ message at the end of the turn (a
 * microtask), packed several to a part (codec `packFrames`), so many calls
 * or replies in flight pay ZeroMQ's per-message and per-part costs once. A
 * lone call is not delayed: it leaves as soon as the code that made it
 * yields. PROTOCOL.md allows any number of frames per message; a batch is
 * capped so one message stays small.
 */
import { packFrames } from './codec.js'

/** Flush early once a batch holds this many frames… */
const MAX_FRAMES = 512
/** …or this many bytes. */
const MAX_BYTES = 256 * 1024

export class Outbox {
  private frames: (readonly Uint8Array[])[] = []
  private bytes = 0
  /** Call ids in the batch, to fail if it cannot be queued. */
  private ids: number[] = []
  private scheduled = false
  private flushed: { promise: Promise<boolean>; resolve: (sent: boolean) => void } | undefined
  /** The write of the last batch, for callers that ask after it already left. */
  private last: Promise<boolean> = Promise.resolve(true)

  /**
   * @param write queues one message; resolves false if it could not be queued.
   * @param failed told which call ids were in a batch that could not be queued.
   */
  constructor(
    private readonly write: (parts: Uint8Array[]) => Promise<boolean>,
    private readonly failed: (ids: number[]) => void,
  ) {}

  /** The most bytes packed into one part (a peer's maxMessageSize applies per part); 0 packs nothing. */
  partLimit = 0

  /** Add one frame (envelope and optional body); `id` ≥ 0 marks a call to fail if the batch is refused. */
  post(frame: readonly Uint8Array[], id = -1): void {
    this.frames.push(frame)
    this.bytes += frame[0]!.length + (frame[1]?.length ?? 0)
    if (id >= 0) this.ids.push(id)
    if (this.frames.length >= MAX_FRAMES || this.bytes >= MAX_BYTES) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(this.flush)
    }
  }

  /** Resolves with whether the batch holding everything posted so far was queued. */
  whenFlushed(): Promise<boolean> {
    if (this.frames.length === 0) return this.last
    if (this.flushed === undefined) {
      let resolve!: (sent: boolean) => void
      const promise = new Promise<boolean>((r) => (resolve = r))
      this.flushed = { promise, resolve }
    }
    return this.flushed.promise
  }

  /** Send what is pending now (also used before a control frame, to keep order). */
  flush = (): void => {
    this.scheduled = false
    if (this.frames.length === 0) return
    const { frames, ids, flushed } = this
    this.frames = []
    this.ids = []
    this.bytes = 0
    this.flushed = undefined
    const sent = this.write(packFrames(frames, this.partLimit))
    this.last = sent
    if (ids.length > 0 || flushed !== undefined) {
      void sent.then((ok) => {
        if (!ok && ids.length > 0) this.failed(ids)
        flushed?.resolve(ok)
      })
    }
  }
}
