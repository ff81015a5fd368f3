/**
 * The dialling side of one peer (PROTOCOL.md 10.1, rows D…): our dial to
 * its address (its "socket": one connect() on the node's dialling ROUTER,
 * sockets.ts), the JOIN handshake, and reconnection with back-off. Each STAY
 * starts a new {@link Link} on the socket; the socket's connection dropping
 * (libzmq's in-order notice) ends it. When libzmq gives up on the socket
 * (handshake failed), or the link ends for a reason libzmq's own reconnecting
 * cannot mend, the dialler waits out its back-off and opens a new one.
 *
 * It sees its host through {@link DialHost} only.
 */
import type { Clock } from '../clock.js'
import { BilateralError, clip, type ErrorCode } from '../errors.js'
import { Codec, CodecError, isPart } from '../wire/codec.js'
import { FrameType, Part, REFUSALS, TOCK, encodePart, isData, type DataFrame, type Frame, type Stay } from '../wire/frames.js'
import type { JoinPace } from './join-pace.js'
import { Link } from './link.js'
import type { DialEvents, Delivery, HandshakeFailure } from './sockets.js'

/**
 * `joining`: sending JOIN on an open socket until STAY. `backoff`: waiting to
 * open a new socket. `active`: our link serves the peer. `standby`: another
 * link serves the peer, or should. `stopped`: disconnect() or close().
 */
export type DialState = 'joining' | 'backoff' | 'active' | 'standby' | 'stopped'

/** What the dialler needs of a dial (sockets.ts Dial). */
export interface DialPort {
  readonly connected: boolean
  send(parts: Uint8Array[]): Promise<Delivery>
  /** Close; `deliver`: give what is queued (a PART) the node's linger to leave, unless `leaving` marks the peer's own PART. */
  close(deliver?: boolean, leaving?: (parts: Buffer[]) => boolean): void
}

/** What the dialler needs of the mesh. */
export interface DialHost {
  readonly clock: Clock
  readonly timing: { readonly joinInterval: number; readonly reconnectMin: number; readonly reconnectMax: number }
  /** The node's pace of JOINs (join-pace.ts): how long to wait before sending one again, from how long STAYs take. */
  readonly pace: Pick<JoinPace, 'wait' | 'answered'>
  /** A new socket to `address` (throws if none can be made). */
  open(address: string, peer: string, events: DialEvents): DialPort
  /**
   * The JOIN to send to `peer` (undefined: a dial by address alone, whose JOIN names no target): with a static proof, or
   * (encrypted) one answering `challenge`; undefined while no proof can be made yet.
   */
  join(peer: string | undefined, challenge: Uint8Array | undefined): Uint8Array | undefined
  /** Does the STAY come from the node we dialled (`peer`; undefined: any node but us), on our network? The refusal's code and message, or undefined. */
  checkStay(peer: string | undefined, address: string, stay: Stay): { code: ErrorCode; message: string } | undefined
  /** A dial by address alone learnt its peer's name (`dialler.peer`) from a STAY; its link follows. */
  named(dialler: Dialler): void
  /** A link for a STAY on our socket to `address`. */
  makeLink(peer: string, address: string, stay: Stay, write: (parts: Uint8Array[]) => Promise<Delivery>): Link
  /** Our link is up (STAY accepted); the host decides whether it serves the peer. */
  up(dialler: Dialler, link: Link): void
  /** Our live link is gone. */
  lost(link: Link, reason: 'PART' | 'HEARTBEAT' | 'AUTH'): void
  /** Is another link serving this peer? */
  served(peer: string): boolean
  refused(peer: string, error: BilateralError): void
  /** A new attempt: a socket to `address` is open, its JOIN queued. */
  attempt(peer: string, address: string): void
  /** The next attempt comes after `ms` (a refusal, a lost peer, a socket given up on). */
  backoff(peer: string, ms: number): void
  data(link: Link, frame: DataFrame): void
  /** A message on our socket did not decode. */
  dropped(peer: string, error: CodecError): void
  /** A message on `link` was handled; it held data frames and was `bytes` long. */
  consumed(link: Link, bytes: number): void
  failed(error: unknown): void
}

export class Dialler {
  state: DialState = 'standby'
  /** When it entered its state (clock ms). */
  since: number
  /** The link of the socket's current session (live when active, retired in standby), if a STAY made one. */
  link: Link | undefined
  /** The code of the last refusal or failed handshake, while no new attempt has begun since. */
  lastRefusal: ErrorCode | undefined
  /** How many attempts in a row were refused with the same code, and that code. */
  refusals = 0
  private streak: ErrorCode | undefined
  /** Why the last attempt failed, for the layer above to report (no connection, a handshake failure, a refusal): a string, cheap to keep current. */
  lastFailure: string | undefined
  /** When the back-off ends (clock ms), in state `backoff`. */
  retryAt = 0
  private port: DialPort | undefined
  /** The listener's CHALLENGE on the current connection (encrypted). */
  private challenge: Uint8Array | undefined
  /** A JOIN was sent on this socket (and may still be queued). */
  private joinQueued = false
  /** JOINs sent again on this connection since the last fresh one: each waits twice as long as the one before, up to a cap. */
  private joinResends = 0
  /**
   * When the listener could first read the last fresh JOIN (clock ms), until
   * a STAY answers it: how long STAYs take (join-pace.ts). That is when it
   * was queued on a connected socket, or when the connection it waited for
   * came up (`freshJoinWaiting`), so the time a connection takes (TCP, the
   * ZeroMQ handshake, libzmq's reconnect back-off) is not counted.
   */
  private freshJoinAt: number | undefined
  private freshJoinWaiting = false
  private timer: unknown
  private attempt = 0
  /** While joining: when our last JOIN on this socket was refused (0: none was), so a new challenge does not skip the back-off. */
  private refusedAt = 0
  private readonly codec = new Codec()

  /**
   * `name`: the peer we dial, or undefined for a dial by address alone,
   * which takes the name the first STAY gives and dials that from then on.
   */
  constructor(
    private readonly host: DialHost,
    private name: string | undefined,
    readonly address: string,
  ) {
    this.since = host.clock.now()
  }

  /** The peer's name, or (a dial by address alone, not yet named) its address. */
  get peer(): string {
    return this.name ?? this.address
  }

  /** Is it a dial by address alone that has not learnt its peer's name? */
  get unnamed(): boolean {
    return this.name === undefined
  }

  /**
   * Open a fresh socket and join now, then again at the pace of sendJoin
   * until answered (D1). If no socket can be made (out of file descriptors, say),
   * the first attempt throws to `connect()`; later ones report and back off.
   */
  start(first = false): void {
    if (this.state === 'stopped') return
    this.clearTimer()
    this.closePort()
    this.enter('joining')
    this.lastRefusal = undefined
    try {
      this.port = this.host.open(this.address, this.peer, this.portEvents(this.socket))
    } catch (error) {
      const failure =
        error instanceof BilateralError
          ? error
          : new BilateralError(
              (error as { code?: unknown }).code === 'EINVAL' ? 'INVALID_ARGUMENT' : 'SOCKET',
              `cannot dial ${this.address}: ${(error as Error).message}`,
              {
                peer: this.peer,
                cause: error,
              },
            )
      if (first) throw failure
      this.fail(failure)
      return
    }
    this.host.attempt(this.peer, this.address)
    this.sendJoin()
  }

  /** The peer went down or the socket gave up: open a new socket after the back-off (D24). */
  resume(): void {
    if (this.state === 'stopped') return
    this.closePort()
    this.enter('backoff')
    const wait = this.backoff()
    this.retryAt = this.host.clock.now() + wait
    this.host.backoff(this.peer, wait)
    this.setTimer(wait, () => this.start())
  }

  /**
   * Another link serves this peer: stop joining (D2, D7, D25). Once
   * stragglers have had time to arrive, close the socket, or start joining
   * again if that other link never came up (D22, D23).
   */
  standby(): void {
    if (this.state === 'stopped') return
    this.enter('standby')
    if (this.link?.state === 'live') this.link.state = 'retired'
    this.setTimer(this.host.timing.joinInterval, () => {
      if (!this.host.served(this.peer)) return this.resume()
      this.closePort()
    })
  }

  /** disconnect() or close(); `parted`: a PART was just sent on the socket, and is given time to leave. */
  stop(parted: boolean): void {
    this.enter('stopped')
    this.clearTimer()
    this.closePort(parted)
  }

  /** Move to `state`, noting when (for the layer above to show). */
  private enter(state: DialState): void {
    if (state !== this.state) this.since = this.host.clock.now()
    this.state = state
  }

  /** Whether its socket has a connection now. */
  get connected(): boolean {
    return this.port?.connected === true
  }

  /** Whether a refused JOIN waits for its back-off on the same socket (state joining, retryAt the end of it). */
  get refused(): boolean {
    return this.refusedAt > 0
  }

  /** Number of the current socket (closePort moves it on): events of an older one are ignored. */
  private socket = 0

  private portEvents(socket: number): DialEvents {
    const mine = (): boolean => socket === this.socket && this.state !== 'stopped'
    return {
      message: (parts) => {
        if (mine()) this.onMessage(parts)
      },
      connected: () => {
        if (!mine()) return
        // A failure to connect is over; a refusal is not: it may have come on this connection before the monitor said it was up.
        if (this.lastRefusal === undefined) this.lastFailure = undefined
        // The fresh JOIN that waited for this connection goes out now: its time starts.
        if (this.freshJoinWaiting) {
          this.freshJoinAt = this.host.clock.now()
          this.freshJoinWaiting = false
        }
      },
      dropped: () => {
        if (mine()) this.onDropped()
      },
      unreachable: (why) => {
        if (mine()) this.lastFailure = `${why} at ${this.address} yet (retrying)`
      },
      failed: (failure) => {
        if (mine()) this.fail(handshakeError(failure, this.peer))
      },
      error: (error) => this.host.failed(error),
    }
  }

  private onMessage(parts: Buffer[]): void {
    let frames: Frame[]
    try {
      frames = this.codec.decodeMessage(parts)
    } catch (error) {
      if (error instanceof CodecError) return this.host.dropped(this.peer, error)
      throw error
    }
    const link = this.link
    if (link !== undefined && link.state !== 'closed') link.lastHeard = this.host.clock.now()
    let data = false
    for (const frame of frames) {
      switch (frame.type) {
        case FrameType.STAY:
          this.onStay(frame)
          break
        case FrameType.PART:
          this.onPart(frame.reason, frame.message, frame.name)
          break
        case FrameType.TICK:
          void this.port?.send([TOCK])
          break
        case FrameType.CHALLENGE:
          this.onChallenge(frame.nonce)
          break
        case FrameType.CREDIT:
          this.link?.granted(frame.messages, frame.bytes)
          break
        case FrameType.TOCK:
          // The answer to our last TICK (one is outstanding at a time): its round trip, as liveness sees it.
          if (link !== undefined && link.lastTick > link.opened) link.rtt = this.host.clock.now() - link.lastTick
          break
        case FrameType.JOIN:
          break
        default:
          // D28: data frames count on the link of this socket's session, live or retired; before any STAY there is none.
          if (isData(frame.type) && this.link !== undefined && this.link.state !== 'closed') {
            data = true
            this.host.data(this.link, frame as DataFrame)
          }
      }
    }
    if (data && this.link !== undefined) this.host.consumed(this.link, byteLength(parts))
  }

  /** D4–D6, D20: a STAY on our socket. */
  private onStay(stay: Stay): void {
    if (this.state !== 'joining' && this.state !== 'standby') return
    const refusal = this.host.checkStay(this.name, this.address, stay)
    if (refusal !== undefined) {
      void this.port?.send([encodePart(refusal.code, refusal.message)])
      const error = new BilateralError(refusal.code, refusal.message, { peer: this.peer })
      // D5, D6: joining, try again after the back-off; standing by, only report it.
      if (this.state === 'joining') this.fail(error, false)
      else {
        this.lastFailure = error.message
        this.host.refused(this.peer, error)
      }
      return
    }
    if (this.name === undefined) {
      this.name = stay.name
      this.host.named(this)
    }
    const port = this.port!
    const link = this.host.makeLink(this.peer, this.address, stay, (parts) => port.send(parts))
    this.link?.close()
    this.link = link
    if (this.state === 'standby') {
      // D20: the peer took our JOIN after we yielded to its own dial: withdraw it; stragglers on it still count.
      link.state = 'retired'
      void link.send([encodePart(Part.CROSS, 'the other connection between us wins')])
      // Stragglers on it get a full joinInterval before the socket closes (D22).
      this.standby()
      return
    }
    this.clearTimer()
    this.enter('active')
    this.refusedAt = 0
    this.attempt = 0
    this.lastFailure = undefined
    this.lastRefusal = undefined
    this.refusals = 0
    this.streak = undefined
    // D11: the first TICK is due pingInterval after the STAY (the link was heard then).
    link.lastTick = link.lastHeard
    if (this.freshJoinAt !== undefined) this.host.pace.answered(link.lastHeard - this.freshJoinAt)
    this.untimeJoin()
    this.host.up(this, link)
  }

  /** D7–D10, D12, D14–D17, D19: a PART on our socket. */
  private onPart(reason: string, message: string, name: string | undefined): void {
    // D19: a dialler standing by has no join in progress to refuse or restart.
    if (this.state === 'standby' || this.state === 'stopped') return
    const link = this.link
    const live = this.state === 'active' && link !== undefined && link.state === 'live'
    if (this.name === undefined && (reason === Part.CROSS || reason === Part.DUPLICATE)) {
      // A dial by address alone met a node we are linked to already (A8, A9), which says its name (4.1) if it is of this release.
      const who = name === undefined ? 'one of our peers' : JSON.stringify(clip(name, 64))
      this.lastFailure = `the node at ${this.address} is ${who}, linked to us already (${reason})`
      this.host.refused(this.peer, new BilateralError('ALREADY_CONNECTED', this.lastFailure, { peer: name ?? this.peer }))
      return this.stop(false)
    }
    if (reason === Part.CROSS) {
      // D7, D12: our link lost (or never won) the tie-break: the peer's own dial serves it.
      if (live) this.host.lost(link, 'PART')
      this.standby()
      return
    }
    if (REFUSALS.has(reason)) {
      const error = new BilateralError(reason as ErrorCode, `${this.peer} refused our join: ${clip(message)}`, { peer: this.peer })
      if (live) {
        this.host.lost(link, reason === Part.AUTH ? 'AUTH' : 'PART')
        this.lastFailure = error.message
        this.host.refused(this.peer, error)
        this.resume()
      } else this.fail(error, reason === Part.TIMEOUT)
      return
    }
    if (live) {
      this.host.lost(link, 'PART')
      link.close()
      this.link = undefined
    }
    // D9, D16: NOT_JOINED: the peer forgot this connection; join again at once on this socket. CLOSE: reconnect after back-off.
    if (reason === Part.NOT_JOINED) this.rejoin()
    else if (live) this.resume()
  }

  /** D29: the listener's challenge for this connection: answer it with a fresh proof, at once unless we are backing off. */
  private onChallenge(nonce: Uint8Array): void {
    this.challenge = nonce
    if (this.state !== 'joining' || this.refusedAt > 0) return
    this.joinQueued = false
    this.sendJoin()
  }

  /**
   * D30: the socket's connection dropped (in order: everything it carried
   * came first, and what follows comes on the next connection, which libzmq
   * makes by itself). The link ends; the next connection joins afresh.
   */
  private onDropped(): void {
    this.challenge = undefined
    // What refused us came on this connection: the next one may meet another node (the peer fixed, or replaced).
    this.lastRefusal = undefined
    const link = this.link
    this.link = undefined
    link?.close()
    if (this.state === 'active' && link !== undefined) {
      this.host.lost(link, 'HEARTBEAT')
      this.enter('joining')
    } else if (this.state === 'joining') {
      this.lastFailure = `the connection to ${this.address} dropped before ${this.peer} answered our JOIN`
    } else return // In standby the socket is about to close anyway.
    // The JOIN queues in the socket and goes out on the next connection.
    if (this.refusedAt === 0) {
      this.joinQueued = false
      this.sendJoin()
    }
  }

  /**
   * Send JOIN, then again until answered (D1, D3): after `joinInterval`,
   * or longer while this node's STAYs are taking longer (join-pace.ts), then
   * twice and four times that, and every four from then on. The first one
   * queues until the connection is up; re-sends go out only while
   * connected, so an unreachable peer does not get a burst of stale JOINs.
   * A JOIN on TCP is not lost: a re-send is for a listener that dropped one
   * (section 13), and one that is only slow to answer (a mesh forming, its
   * event loop behind) gets few, not one more each interval.
   */
  private sendJoin(): void {
    if (this.state !== 'joining') return
    const again = this.joinQueued
    if (!again) this.joinResends = 0
    // No proof yet: undefined, and joinNow() sends it when there is one.
    const join = again && this.port?.connected !== true ? undefined : this.host.join(this.name, this.challenge)
    if (join !== undefined && again) this.joinResends++
    if (join !== undefined && !again) this.timeFreshJoin()
    this.setTimer(this.host.pace.wait(this.joinResends), () => this.sendJoin())
    if (join === undefined) return
    this.joinQueued = true
    void this.port?.send([join])
  }

  /** A fresh JOIN was queued: timed from now if the connection is up, else from when it comes up. */
  private timeFreshJoin(): void {
    const connected = this.port?.connected === true
    this.freshJoinAt = connected ? this.host.clock.now() : undefined
    this.freshJoinWaiting = !connected
  }

  /** No JOIN to time: answered, refused, or its socket closed. */
  private untimeJoin(): void {
    this.freshJoinAt = undefined
    this.freshJoinWaiting = false
  }

  /** A proof can be made now that could not be before: send the JOIN at once, unless it went already or we are backing off. */
  joinNow(): void {
    if (this.state !== 'joining' || this.joinQueued || this.refusedAt > 0) return
    this.sendJoin()
  }

  /** D9, D16: join again at once on this socket. */
  private rejoin(): void {
    if (this.port === undefined) return this.resume()
    this.enter('joining')
    this.joinQueued = false
    this.sendJoin()
  }

  /**
   * An attempt failed: report it and try again after the back-off. A refused
   * JOIN is retried on the same socket (D5, D6, D8); a socket libzmq gave up
   * on, or a connection the listener will ignore from now on (TIMEOUT), with
   * a new one.
   */
  private fail(error: BilateralError, newSocket = true): void {
    this.lastFailure = error.message
    this.refusals = this.streak === error.code ? this.refusals + 1 : 1
    this.streak = error.code
    this.lastRefusal = error.code
    this.host.refused(this.peer, error)
    this.untimeJoin()
    if (newSocket) return this.resume()
    if (this.state === 'stopped') return
    this.enter('joining')
    this.refusedAt = this.host.clock.now()
    const wait = this.backoff()
    this.retryAt = this.refusedAt + wait
    this.host.backoff(this.peer, wait)
    this.setTimer(wait, () => {
      this.refusedAt = 0
      this.joinQueued = false
      // A new attempt: what refused the last one may have changed (the peer fixed, another node at its address).
      this.lastRefusal = undefined
      this.sendJoin()
    })
  }

  /** Close our socket; its session's link ends with it. */
  private closePort(deliver = false): void {
    this.port?.close(deliver, isPart)
    this.port = undefined
    this.joinQueued = false
    this.untimeJoin()
    this.refusedAt = 0
    this.challenge = undefined
    this.link?.close()
    this.link = undefined
    this.socket++
  }

  /** Capped exponential back-off with jitter in [½, 1] of the step. */
  private backoff(): number {
    const { reconnectMin, reconnectMax } = this.host.timing
    const step = Math.min(reconnectMax, reconnectMin * 2 ** Math.min(this.attempt++, 30))
    return step / 2 + (Math.random() * step) / 2
  }

  private setTimer(ms: number, fn: () => void): void {
    this.clearTimer()
    this.timer = this.host.clock.setTimer(fn, ms)
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.host.clock.clearTimer(this.timer)
    this.timer = undefined
  }
}

/** A failed handshake or connection attempt, as a coded error naming the address. */
export function handshakeError(failure: HandshakeFailure, peer?: string): BilateralError {
  return new BilateralError(failure.code, `${failure.why} (${failure.address})`, { peer })
}

const byteLength = (parts: readonly Uint8Array[]): number => {
  let n = 0
  for (const p of parts) n += p.length
  return n
}
