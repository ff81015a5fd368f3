/**
 * A link: one joined connection to one incarnation of a peer, from the JOIN
 * and STAY that made it to its end. A dialler's socket carries a new link
 * after every STAY; an inbound connection carries one from its JOIN. The
 * call layer binds every call it serves to the link that carried it, so an
 * answer never travels on a connection to another process (PROTOCOL.md 8).
 *
 * Sending: data frames are coalesced per turn (`outbox.ts`) and leave as
 * the peer's window allows (PROTOCOL.md 3.3). What the window does not let
 * out yet waits here, up to `backlog` bytes; beyond that a batch is refused
 * and its tags are told. Receiving: the link counts what it delivered, and
 * grants the peer more window as that is consumed.
 */
import { MAX_UINT32, encodeCredit, type Window } from '../wire/frames.js'
import { Outbox, type Batch } from './outbox.js'
import type { Delivery } from './sockets.js'

export type Direction = 'outbound' | 'inbound'

/**
 * `live`: it serves the peer (or is about to). `retired`: it lost a
 * cross-dial but its connection is still open, so frames in flight on it
 * still count and answers may still go back on it. `closed`: its connection
 * or session is over; nothing more is sent on it.
 */
export type LinkState = 'live' | 'retired' | 'closed'

/** Why a batch could not be sent: the link is closed, libzmq's queue is full, or the peer's window and our backlog are. */
export type Unsent = 'closed' | 'full' | 'backlog'

/** What a poster is told when the batch holding its frame was not sent. */
export interface SendTag {
  unsent(link: Link, why: Unsent): void
}

/** How a link reaches its connection: a send that never waits (sockets.ts). */
export type Writer = (parts: Uint8Array[]) => Promise<Delivery>

/** What the peer announced in the JOIN or STAY that made the link; a node of an earlier release announces less. */
export interface PeerTerms {
  /** Which run of the peer's process this is (undefined from a node of an earlier release). */
  readonly incarnation?: Uint8Array
  /** Its receive window (undefined: it does not do flow control). */
  readonly window?: Window
  /** The time its CALLs without a deadline give us, ms; announcing it also says it reads deadlines, metadata and CANCEL. */
  readonly callTimeout?: number
  /** Its acceptor's stallTimeout (a STAY's): we must send within it, ms. */
  readonly stallTimeout?: number
}

/** The shortest TICK interval a peer's announced stallTimeout can ask of us, ms. */
export const MIN_TICK = 100

export interface LinkOptions {
  /** Our own receive window, announced in JOIN/STAY: grant the peer more once half of either is consumed. */
  window: Window
  /** Most bytes held for the peer while its window is full. */
  backlog: number
  /** Most messages libzmq queues per connection: a larger window announced by the peer is capped to it. */
  queue: number
}

export class Link {
  state: LinkState = 'live'
  /** When anything that decodes last arrived on it (clock ms). */
  lastHeard: number
  /** When it was made (clock ms). */
  readonly opened: number
  /** Outbound links: the round trip of the last TICK answered, ms. */
  rtt: number | undefined
  /** Outbound links: when we last sent TICK. */
  lastTick = 0
  /** When the peer's key was last checked against authorizedKeys (encrypted nodes). */
  lastChecked: number
  /** Which run of the peer's process the link reaches (undefined from a node of an earlier release). */
  readonly incarnation: Uint8Array | undefined
  /** The deadline the peer's CALLs carry when they carry none, ms; undefined if the peer does not do deadlines, metadata and CANCEL. */
  readonly peerCallTimeout: number | undefined
  /** Outbound links: TICK at least this often, so the peer's acceptor hears from us within its stallTimeout, ms. */
  readonly tickEvery: number | undefined
  private readonly outbox: Outbox<SendTag>
  /** What the peer's window still allows; undefined when the peer announced none (no flow control). */
  private credit: { messages: number; bytes: number } | undefined
  /** The peer's full window, to tell a message larger than it from one that must wait. */
  private readonly peerWindow: Window | undefined
  private held: Batch<SendTag>[] = []
  private heldBytes = 0
  /** Delivered to us since we last granted the peer more window. */
  private consumedMessages = 0
  private consumedBytes = 0
  /** A CREDIT due to the peer, to ride on the next message we send it (or go alone at the end of the turn). */
  private grant: Uint8Array | undefined

  /**
   * @param peer the peer's name.
   * @param terms what the peer announced in its JOIN or STAY.
   */
  /** When its last message arrived (clock ms), if it is live; undefined otherwise, when the clock is to be read instead. */
  get arrived(): number | undefined {
    return this.state === 'live' ? this.lastHeard : undefined
  }

  constructor(
    readonly peer: string,
    readonly direction: Direction,
    terms: PeerTerms,
    private readonly write: Writer,
    private readonly options: LinkOptions,
    now: number,
    /** The address we dialled, for a link of ours (an inbound one's is not known). */
    readonly address?: string,
  ) {
    this.lastHeard = now
    this.opened = now
    this.lastChecked = now
    this.incarnation = terms.incarnation
    this.peerCallTimeout = terms.callTimeout
    // Twice within the peer's stallTimeout (one TICK waits for its TOCK before the next goes), but never more often than
    // every MIN_TICK: a peer announcing 1 ms must not make us sweep every few milliseconds.
    this.tickEvery = terms.stallTimeout === undefined ? undefined : Math.max(MIN_TICK, Math.floor(terms.stallTimeout / 2))
    this.outbox = new Outbox<SendTag>(this.transmit)
    const peerWindow = terms.window
    if (peerWindow !== undefined) {
      // Never more in flight than libzmq queues at either end: a fuller queue would refuse at once.
      this.peerWindow = { messages: Math.min(peerWindow.messages, options.queue), bytes: peerWindow.bytes }
      this.credit = { ...this.peerWindow }
    }
  }

  /** Does the peer read CALL deadlines and metadata, CAST metadata and CANCEL (it announced a callTimeout)? */
  get lifecycle(): boolean {
    return this.peerCallTimeout !== undefined
  }

  /** Does the peer take part in flow control (it announced a window, so it also reads CREDIT)? */
  get flowControl(): boolean {
    return this.peerWindow !== undefined
  }

  /** Bytes waiting for the peer's window. */
  get backlog(): number {
    return this.heldBytes
  }

  /** Pack frames into parts of up to `maxPart` bytes (0: one envelope or body per part, for peers that announced none). */
  packUpTo(maxPart: number): void {
    this.outbox.partLimit = maxPart
  }

  /** Queue a data frame; frames of one event-loop turn leave as one message. `tag` is told if they cannot be sent. */
  post(frame: readonly Uint8Array[], tag?: SendTag): void {
    this.outbox.post(frame, tag)
  }

  /** Resolves with whether everything posted so far was sent or is waiting for the peer's window. */
  whenFlushed(): Promise<boolean> {
    return this.outbox.whenFlushed()
  }

  /** Send a control frame now, after the data already posted (which may still wait for the window). Resolves false if it was not queued. */
  send(parts: Uint8Array[]): Promise<boolean> {
    this.outbox.flush()
    if (this.state === 'closed') return Promise.resolve(false)
    return this.write(parts).then(isSent)
  }

  /** The peer granted more window (CREDIT): send what waited. */
  granted(messages: number, bytes: number): void {
    const credit = this.credit
    if (credit === undefined) return
    credit.messages = Math.min(credit.messages + messages, MAX_UINT32)
    credit.bytes = Math.min(credit.bytes + bytes, 2 * MAX_UINT32)
    while (this.held.length > 0 && this.fits(this.held[0]!)) {
      const batch = this.held.shift()!
      this.heldBytes -= batch.bytes
      this.writeBatch(batch)
    }
  }

  /**
   * A message of `bytes` holding data frames was delivered from this link:
   * once half of our window is used, grant the peer as much again. The
   * CREDIT rides on the answers this turn produces, or goes alone after it.
   */
  consumed(bytes: number): void {
    if (!this.flowControl || this.state === 'closed') return
    this.consumedMessages++
    this.consumedBytes += bytes
    const w = this.options.window
    if (this.grant === undefined && (2 * this.consumedMessages >= w.messages || 2 * this.consumedBytes >= w.bytes)) {
      this.grant = encodeCredit(this.consumedMessages, Math.min(this.consumedBytes, MAX_UINT32))
      this.consumedMessages = 0
      this.consumedBytes = 0
      queueMicrotask(this.sendGrant)
    }
  }

  /** The CREDIT due, alone, if no message carried it this turn. */
  private sendGrant = (): void => {
    const grant = this.grant
    this.grant = undefined
    if (grant !== undefined && this.state !== 'closed') void this.write([grant])
  }

  /** The session is over: nothing more is sent; what waited is given back to its posters. */
  close(): void {
    if (this.state === 'closed') return
    this.outbox.flush()
    this.state = 'closed'
    const held = this.held
    this.held = []
    this.heldBytes = 0
    for (const batch of held) this.refuse(batch, 'closed')
  }

  /** Each batch the outbox hands over: out now, held for the window, or refused. */
  private transmit = (batch: Batch<SendTag>): void => {
    if (this.state === 'closed') return this.refuse(batch, 'closed')
    if (this.held.length === 0 && this.fits(batch)) return this.writeBatch(batch)
    if (this.heldBytes + batch.bytes > this.options.backlog) return this.refuse(batch, 'backlog')
    this.held.push(batch)
    this.heldBytes += batch.bytes
    batch.settled?.(true)
  }

  /** May `batch` go out now? A batch larger than the whole window may go when nothing else is in flight. */
  private fits(batch: Batch<SendTag>): boolean {
    const credit = this.credit
    if (credit === undefined) return true
    if (credit.messages < 1) return false
    return batch.bytes <= credit.bytes || credit.bytes >= this.peerWindow!.bytes
  }

  private writeBatch(batch: Batch<SendTag>): void {
    if (this.credit !== undefined) {
      this.credit.messages -= 1
      this.credit.bytes -= batch.bytes
    }
    let parts = batch.parts
    if (this.grant !== undefined) {
      // A control frame in a part of its own after the data: this message was going anyway. Its bytes count
      // against the window like the rest of the message, as the peer counts them.
      parts = [...parts, this.grant]
      if (this.credit !== undefined) this.credit.bytes -= this.grant.length
      this.grant = undefined
    }
    const sent = this.write(parts)
    // One promise reaction per batch, only when someone must hear how it went.
    if (batch.tags.length > 0 || batch.settled !== undefined) {
      void sent.then((delivery) => {
        if (delivery === 'sent') batch.settled?.(true)
        else this.refuse(batch, delivery === 'gone' ? 'closed' : 'full')
      })
    }
  }

  private refuse(batch: Batch<SendTag>, why: Unsent): void {
    for (const tag of batch.tags) tag.unsent(this, why)
    batch.settled?.(false)
  }
}

const isSent = (delivery: Delivery): boolean => delivery === 'sent'
