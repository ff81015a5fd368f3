/**
 * The accepting side (PROTOCOL.md 10.2, rows A…): every connection on our
 * ROUTER, from libzmq's connect notification to its disconnect
 * notification, and what it may do in each state.
 *
 * A connection that has not joined gets the least the protocol allows: a
 * message that is one JOIN in one part of at most 2 KiB is decoded; one
 * that looks like a data frame is told NOT_JOINED (at most once per
 * `joinInterval`); anything else is dropped unread. One that has not joined
 * within `joinTimeout` is ignored from then on: libzmq offers no way to close
 * one connection of a ROUTER, so it stays open until its peer closes it,
 * counted against the connection limits, and costs a table lookup per
 * message.
 *
 * It sees the mesh through {@link AcceptHost} only.
 */
import type { Clock } from '../clock.js'
import { BilateralError, clip, type ErrorCode } from '../errors.js'
import { Codec, CodecError, decodeJoin, peek } from '../wire/codec.js'
import {
  FrameType,
  MAX_NAME_BYTES,
  NONCE_BYTES,
  Part,
  TOCK,
  encodeChallenge,
  encodePart,
  isData,
  type DataFrame,
  type Frame,
  type Join,
} from '../wire/frames.js'
import type { Admission } from './admission.js'
import type { DialState } from './dial.js'
import { Link } from './link.js'
import type { Delivery } from './sockets.js'

/**
 * `unjoined`: connected, no JOIN accepted yet. `joining`: a JOIN waits for
 * the duplicate probe. `joined`: its link serves (or is about to serve) its
 * peer. `retired`: it lost a cross-dial; stragglers on it still count, for
 * `2 × joinInterval`. `ignored`: it missed the join deadline, broke the
 * protocol, or faked its own disconnect: nothing it sends is read.
 */
export type ConnectionState = 'unjoined' | 'joining' | 'joined' | 'retired' | 'ignored'

interface Connection {
  readonly routingId: Buffer
  readonly key: string
  /** When it connected (clock ms), moved on by time our own event loop lost. */
  since: number
  state: ConnectionState
  link: Link | undefined
  /** Retired: when to forget it. */
  until: number
  /** Encrypted nodes: the nonce of the CHALLENGE we sent on it. */
  nonce: Uint8Array | undefined
  /** When we last answered it while unjoined (NOT_JOINED, VERSION), to answer at most once per joinInterval. */
  answeredAt: number
  /** JOINs read in the current joinInterval (from `joinsSince`): a few at most, the rest dropped unread. */
  joins: number
  joinsSince: number
  /** Ignored for missing the join deadline, and not yet told so. */
  owesTimeout: boolean
  /** It sent libzmq's disconnect notification itself: its own such messages mean nothing from now on. */
  faked: boolean
  /** When it last sent anything (clock ms). */
  lastSeen: number
}

/** How a JOIN's proof checks out on an encrypted node. */
export interface JoinVerifier {
  /** A fresh nonce for a CHALLENGE. */
  nonce(): Uint8Array
  /**
   * Is `join` (on a connection challenged with `nonce`) proven, and may its
   * key join? undefined if so; 'wait' for a JOIN of this release sent before
   * its dialler saw our challenge (it will send another); else a refusal.
   */
  verify(join: Join, nonce: Uint8Array | undefined): string | 'wait' | undefined
}

export interface AcceptHost {
  readonly clock: Clock
  readonly timing: { readonly joinInterval: number; readonly joinTimeout: number; readonly stallTimeout: number }
  readonly network: string
  readonly name: string
  readonly maxPeers: number
  /** Largest message a joined peer may send: beyond it, the peer breaks the protocol. */
  readonly maxMessage: number
  /** Our maxMessageSize: no packed part to a peer is larger. */
  readonly maxMessageSize: number
  readonly verifier: JoinVerifier | undefined
  readonly admission: Admission
  send(routingId: Buffer, parts: Uint8Array[]): Promise<Delivery>
  /** Our STAY. */
  stay(): Uint8Array
  makeLink(join: Join, write: (parts: Uint8Array[]) => Promise<Delivery>): Link
  /** Peers with a live link. */
  peerCount(): number
  isPeer(name: string): boolean
  /** Is `name`'s live link one we dialled (A9)? */
  servedByDial(name: string): boolean
  /** Our dialler's state for `name`, if we dial it. */
  dialState(name: string): DialState | undefined
  up(link: Link): void
  lost(link: Link, reason: 'PART' | 'AUTH' | 'HEARTBEAT' | 'LOST' | 'PROTOCOL'): void
  /** A17: the peer parted this live link with CROSS. */
  crossed(link: Link): void
  data(link: Link, frame: DataFrame): void
  consumed(link: Link, bytes: number): void
  refused(name: string, error: BilateralError): void
  dropped(error: BilateralError): void
  /** Revoke `link` if its key is no longer allowed; true if it was. */
  revoked(link: Link): boolean
  /** Handling one message failed (often a throwing event listener above us). */
  failed(error: unknown): void
}

/** JOINs read per connection per joinInterval. */
const JOINS_PER_INTERVAL = 4

/** Most parts a conforming message has: 512 frames, each envelope and body in a part of its own. */
const MAX_PARTS = 1024

export class Acceptor {
  private readonly connections = new Map<string, Connection>()
  /** Inbound links by peer name (at most one per name). */
  private readonly byName = new Map<string, Connection>()
  private readonly codec = new Codec()
  /** Messages dropped unread: from unjoined or ignored connections, or that did not decode. */
  dropped = 0

  constructor(private readonly host: AcceptHost) {}

  /** Sizes, for stats(): connections by state. */
  counts(): { connections: number; unjoined: number; ignored: number; inbound: number } {
    let unjoined = 0
    let ignored = 0
    for (const c of this.connections.values()) {
      if (c.state === 'unjoined' || c.state === 'joining') unjoined++
      else if (c.state === 'ignored') ignored++
    }
    return { connections: this.connections.size, unjoined, ignored, inbound: this.byName.size }
  }

  /** The inbound link of `name`, if one is joined. */
  linkOf(name: string): Link | undefined {
    const c = this.byName.get(name)
    return c?.state === 'joined' ? c.link : undefined
  }

  // --- from the ROUTER ----------------------------------------------------

  /** libzmq's connect notification. */
  connected(routingId: Buffer): void {
    const key = routingId.toString('latin1')
    const known = this.connections.get(key)
    if (known !== undefined) {
      // A peer's own empty message: nothing it may send.
      known.lastSeen = this.host.clock.now()
      this.dropped++
      return
    }
    // A routing id whose connection closed cannot connect again (libzmq's ids are never reused): a faker (A35).
    if (this.host.admission.wasClosed(key)) return this.faker(routingId, key, undefined)
    this.host.admission.appeared(key)
    const c = this.add(routingId, key)
    this.challenge(c)
  }

  /** libzmq's disconnect notification: everything the connection sent came before it. */
  disconnected(routingId: Buffer): void {
    const key = routingId.toString('latin1')
    const c = this.connections.get(key)
    // libzmq sends one per connection, for connections it announced: any other is the peer's own.
    if (c === undefined || c.faked) return this.faker(routingId, key, c)
    this.connections.delete(key)
    this.host.admission.closed(key)
    this.forget(c)
    if (c.link !== undefined && c.state === 'joined') this.host.lost(c.link, 'HEARTBEAT')
    c.link?.close()
  }

  message(routingId: Buffer, parts: Buffer[]): void {
    const key = routingId.toString('latin1')
    const c = this.connections.get(key)
    // libzmq announces every connection before its first message: this one faked its own disconnect.
    if (c === undefined) return this.faker(routingId, key, undefined)
    c.lastSeen = this.host.clock.now()
    switch (c.state) {
      case 'ignored':
        return this.ignore(c)
      case 'unjoined':
      case 'joining':
        return this.unjoined(c, parts)
      default:
        return this.joined(c, parts)
    }
  }

  // --- sweep ----------------------------------------------------------------

  /**
   * A connection sent libzmq's disconnect notification itself (A35): it is
   * still open, so it counts again, and nothing it sends is read. After
   * `stallTimeout` of silence it is taken as closed (its real notification
   * cannot be told from its fakes).
   */
  private faker(routingId: Buffer, key: string, c: Connection | undefined): void {
    this.dropped++
    if (c === undefined) {
      this.host.admission.reappeared(key)
      c = this.add(routingId, key)
      c.state = 'ignored'
      c.faked = true
    }
    c.lastSeen = this.host.clock.now()
  }

  /** Join deadlines (A32), retirement ends (A29), silent fakers (A35). */
  expire(now: number): void {
    const deadline = now - this.host.timing.joinTimeout
    for (const c of [...this.connections.values()]) {
      if (c.faked) {
        if (now - c.lastSeen > this.host.timing.stallTimeout) {
          this.connections.delete(c.key)
          this.host.admission.closed(c.key)
        }
      } else if (c.state === 'unjoined' && c.since < deadline) {
        c.state = 'ignored'
        c.owesTimeout = true
      } else if (c.state === 'retired' && c.until < now) {
        this.retireEnds(c)
      }
    }
  }

  /** Our event loop was blocked for `late` ms: that time does not count towards join deadlines. */
  forgive(late: number): void {
    for (const c of this.connections.values()) if (c.state === 'unjoined') c.since += late
  }

  /** The links to check for revocation and stalls: joined and retired ones. */
  *links(): Iterable<Link> {
    for (const c of this.connections.values()) if (c.link !== undefined && c.link.state !== 'closed') yield c.link
  }

  /** Our dialler's link to `name` won (A20): part the inbound one with CROSS and retire it. */
  retire(link: Link): void {
    const c = this.byName.get(link.peer)
    if (c?.link !== link) return
    void link.send([encodePart(Part.CROSS, 'the other connection between us wins')])
    this.toRetired(c)
  }

  /** `link` was revoked or lost by the mesh (A13, A19): its connection is unjoined again, joined or retired. */
  drop(link: Link): void {
    let c = this.byName.get(link.peer)
    if (c?.link !== link) c = [...this.connections.values()].find((x) => x.link === link)
    if (c === undefined) return
    this.forget(c)
    link.close()
    this.unjoinedAgain(c)
  }

  /** A connection that was joined or retired is unjoined again: its join deadline starts over, and it gets a new challenge. */
  private unjoinedAgain(c: Connection): void {
    c.link = undefined
    c.state = 'unjoined'
    c.since = this.host.clock.now()
    c.nonce = undefined
    this.challenge(c)
  }

  /** Close every link: the node is closing. Returns the connections that had a link, each of which was sent a PART. */
  close(): Buffer[] {
    const linked: Buffer[] = []
    for (const c of this.connections.values()) {
      if (c.link === undefined) continue
      c.link.close()
      linked.push(c.routingId)
    }
    this.connections.clear()
    this.byName.clear()
    return linked
  }

  // --- states ---------------------------------------------------------------

  private add(routingId: Buffer, key: string): Connection {
    const c: Connection = {
      routingId,
      key,
      since: this.host.clock.now(),
      state: 'unjoined',
      link: undefined,
      until: 0,
      nonce: undefined,
      answeredAt: -Infinity,
      joins: 0,
      joinsSince: -Infinity,
      owesTimeout: false,
      faked: false,
      lastSeen: this.host.clock.now(),
    }
    this.connections.set(key, c)
    return c
  }

  /** A34: nothing is read. A connection that missed the deadline is told once, so a dialler of ours reconnects. */
  private ignore(c: Connection): void {
    this.dropped++
    if (c.owesTimeout) {
      c.owesTimeout = false
      void this.host.send(c.routingId, [encodePart(Part.TIMEOUT, `not joined within ${this.host.timing.joinTimeout} ms; reconnect`)])
    }
  }

  /** A1–A12: a message from a connection that has not joined. */
  private unjoined(c: Connection, parts: Buffer[]): void {
    let join: Join | undefined
    try {
      join = decodeJoin(parts)
    } catch (error) {
      if (!(error instanceof CodecError)) throw error
      this.dropped++
      // A22: another version is told so (at most once per joinInterval); a malformed JOIN is dropped.
      if (error.code === 'VERSION') this.answer(c, Part.VERSION, error.message)
      return
    }
    if (join !== undefined) {
      if (c.state !== 'unjoined' || !this.mayJoin(c)) {
        this.dropped++
        return
      }
      this.onJoin(c, join).catch(this.host.failed)
      return
    }
    this.dropped++
    const head = peek(parts)
    if (head === undefined) return
    if (head.version !== 1) return this.answer(c, Part.VERSION, `unsupported protocol version ${head.version}`)
    // A12: what a joined peer would send: its node restarted, or it skipped JOIN.
    const t = head.type
    if (isData(t) || t === FrameType.TICK || t === FrameType.STAY) this.answer(c, Part.NOT_JOINED, 'send JOIN first')
  }

  /** A message on a joined or retired connection (A6, A13–A28). */
  private joined(c: Connection, parts: Buffer[]): void {
    const link = c.link!
    const size = byteLength(parts)
    if (parts.length > MAX_PARTS || size > this.host.maxMessage) {
      // A33: more than any conforming peer sends in one message. libzmq already read it; nothing more of it is.
      this.dropped++
      this.host.dropped(
        new BilateralError('PROTOCOL', `${link.peer} sent a message of ${parts.length} parts and ${size} bytes: ignored from now on`, {
          peer: link.peer,
        }),
      )
      const wasLive = c.state === 'joined'
      this.forget(c)
      c.state = 'ignored'
      if (wasLive) this.host.lost(link, 'PROTOCOL')
      link.close()
      return
    }
    let frames: Frame[]
    try {
      frames = this.codec.decodeMessage(parts)
    } catch (error) {
      if (!(error instanceof CodecError)) throw error
      this.dropped++
      this.host.dropped(new BilateralError('PROTOCOL', `dropped a message: ${error.message}`, { peer: link.peer, cause: error }))
      // A22 (not on a retired connection, A28).
      if (error.code === 'VERSION' && c.state === 'joined') void this.host.send(c.routingId, [encodePart(Part.VERSION, error.message)])
      return
    }
    if (c.state === 'retired') return this.retiredFrames(c, link, frames, size)
    link.lastHeard = this.host.clock.now()
    let data = false
    for (const frame of frames) {
      // Frames after a PART that ended the link are not read.
      if (c.link !== link || c.state !== 'joined') break
      switch (frame.type) {
        case FrameType.JOIN:
          // A6: the same connection again: answer STAY (a new packing limit may come with it); another name: PROTOCOL.
          if (frame.name === link.peer) {
            link.packUpTo(Math.min(frame.maxPart ?? 0, this.host.maxMessageSize))
            void link.send([this.host.stay()])
          } else this.refuse(c, frame.name, Part.PROTOCOL, 'PROTOCOL', `this connection already joined as ${clip(link.peer, 64)}`)
          break
        case FrameType.TICK:
          // A13: revocation is checked every pingInterval by the sweep as well; a TICK is another chance.
          if (!this.host.revoked(link)) void link.send([TOCK])
          break
        case FrameType.PART:
          if (frame.reason === Part.CROSS) {
            // A16: our own dial is joining and will take over; until then this link serves. A17: otherwise it is retired.
            if (this.host.dialState(link.peer) !== 'joining') this.host.crossed(link)
          } else {
            // A18: a PART AUTH (our key no longer admitted there) is down AUTH, as on the dialling side.
            this.forget(c)
            this.unjoinedAgain(c)
            this.host.lost(link, frame.reason === Part.AUTH ? 'AUTH' : 'PART')
            link.close()
          }
          break
        case FrameType.CREDIT:
          link.granted(frame.messages, frame.bytes)
          break
        case FrameType.TOCK:
        case FrameType.STAY:
        case FrameType.CHALLENGE:
          break
        default:
          data = true
          this.host.data(link, frame as DataFrame)
      }
    }
    if (data) this.host.consumed(link, size)
  }

  /**
   * A24–A27: a retired connection's data still counts until its grace ends,
   * PART or not (the peer parts it with CROSS while answers to calls that
   * went out on it may still be on their way); a JOIN starts over.
   */
  private retiredFrames(c: Connection, link: Link, frames: Frame[], size: number): void {
    let data = false
    for (const frame of frames) {
      if (frame.type === FrameType.JOIN) {
        // A27: the peer dials again on this connection: it is unjoined, and this JOIN is its first message.
        this.retireEnds(c)
        c.state = 'unjoined'
        this.onJoin(c, frame).catch(this.host.failed)
        return
      }
      if (frame.type === FrameType.CREDIT) link.granted(frame.messages, frame.bytes)
      else if (isData(frame.type)) {
        data = true
        this.host.data(link, frame as DataFrame)
      }
    }
    if (data) this.host.consumed(link, size)
  }

  /**
   * A1–A10: checks in order, the first failing one refuses the JOIN (and a
   * refusal repeats no more of the JOIN than a short clip).
   */
  private async onJoin(c: Connection, join: Join): Promise<void> {
    const { network, name } = this.host
    if (join.network !== network) {
      return this.refuse(
        c,
        join.name,
        Part.NETWORK_MISMATCH,
        'NETWORK_MISMATCH',
        `network ${quote(join.network)} is not ours (${quote(network)})`,
      )
    }
    if (join.target !== undefined && join.target !== name) {
      return this.refuse(c, join.name, Part.WRONG_NAME, 'WRONG_NAME', `this is ${quote(name)}, not ${quote(join.target)}`)
    }
    if (join.name.length === 0 || Buffer.byteLength(join.name) > MAX_NAME_BYTES) {
      return this.refuse(c, join.name, Part.PROTOCOL, 'PROTOCOL', `a name must be 1 to ${MAX_NAME_BYTES} bytes`)
    }
    if (join.name === name) return this.refuse(c, join.name, Part.LOOPBACK, 'LOOPBACK', 'a node cannot join itself')
    const verifier = this.host.verifier
    if (verifier !== undefined) {
      const why = verifier.verify(join, c.nonce)
      if (why === 'wait') return
      if (why !== undefined) return this.refuse(c, join.name, Part.AUTH, 'AUTH', why)
    }
    // A7: a bound on joined peers.
    if (!this.host.isPeer(join.name) && this.host.peerCount() >= this.host.maxPeers) {
      return this.refuse(c, join.name, Part.OVERLOADED, 'OVERLOADED', `${this.host.maxPeers} peers are joined already (maxPeers)`)
    }
    const other = this.byName.get(join.name)
    if (other !== undefined && other !== c && other.state === 'joined') {
      // A8, section 13: the name is held through another connection. It keeps it while that connection is open.
      c.state = 'joining'
      const alive = (await this.host.send(other.routingId, [TOCK])) !== 'gone'
      if (c.state !== 'joining' || this.connections.get(c.key) !== c) return
      c.state = 'unjoined'
      if (this.byName.get(join.name) === other && other.state === 'joined') {
        // A dial by address alone is told who we are (4.1): it is linked to us already, and cannot tell through which peer.
        if (alive)
          return this.refuse(
            c,
            join.name,
            Part.DUPLICATE,
            'DUPLICATE',
            `${quote(join.name)} is already connected`,
            join.target === undefined,
          )
        this.forget(other)
        const lost = other.link!
        this.unjoinedAgain(other)
        this.host.lost(lost, 'LOST')
        lost.close()
      }
      if (this.byName.has(join.name)) return
    }
    if (this.host.servedByDial(join.name)) {
      // A9: a live link we dialled is never replaced by a JOIN: the peer's own redundant dial, which yields, or an impostor.
      void this.host.send(c.routingId, [
        encodePart(Part.CROSS, 'the connection we dialled is live', join.target === undefined ? name : undefined),
      ])
      return
    }
    // A10
    const routingId = c.routingId
    const link = this.host.makeLink(join, (parts) => this.host.send(routingId, parts))
    c.link = link
    c.state = 'joined'
    c.nonce = undefined
    this.byName.set(join.name, c)
    void link.send([this.host.stay()])
    this.host.up(link)
  }

  /** Refuse a JOIN with PART `reason` (`sayName`: with our name, 4.1); report it; a new challenge for the next attempt (encrypted). */
  private refuse(c: Connection, claimed: string, reason: string, code: ErrorCode, message: string, sayName = false): void {
    void this.host.send(c.routingId, [encodePart(reason, message, sayName ? this.host.name : undefined)])
    this.host.refused(clip(claimed, MAX_NAME_BYTES), new BilateralError(code, message, { peer: clip(claimed, MAX_NAME_BYTES) }))
    if (c.state === 'unjoined') this.challenge(c)
  }

  /**
   * A JOIN is read at most {@link JOINS_PER_INTERVAL} times per joinInterval
   * per connection (a dialler sends one, or two when challenged): a flood of
   * JOINs costs one check each, and gets a few refusals per interval.
   */
  private mayJoin(c: Connection): boolean {
    const now = this.host.clock.now()
    if (now - c.joinsSince >= this.host.timing.joinInterval) {
      c.joinsSince = now
      c.joins = 0
    }
    return ++c.joins <= JOINS_PER_INTERVAL
  }

  /** Answer an unjoined connection, at most once per joinInterval (a flood gets one answer per interval). */
  private answer(c: Connection, reason: string, message: string): void {
    const now = this.host.clock.now()
    if (now - c.answeredAt < this.host.timing.joinInterval) return
    c.answeredAt = now
    void this.host.send(c.routingId, [encodePart(reason, message)])
    // A dialler answers NOT_JOINED at once, with the nonce it holds: a new one only if it has none.
    if (reason === Part.NOT_JOINED && c.nonce === undefined) this.challenge(c)
  }

  /** Encrypted nodes: a fresh nonce for the connection's next JOIN (A31). */
  private challenge(c: Connection): void {
    const verifier = this.host.verifier
    if (verifier === undefined) return
    c.nonce = verifier.nonce()
    if (c.nonce.length !== NONCE_BYTES) throw new Error('nonce of the wrong size')
    void this.host.send(c.routingId, [encodeChallenge(c.nonce)])
  }

  private toRetired(c: Connection): void {
    c.state = 'retired'
    c.until = this.host.clock.now() + 2 * this.host.timing.joinInterval
    this.forget(c)
    c.link!.state = 'retired'
  }

  /** A27, A29: a retired connection is forgotten: it is unjoined again. */
  private retireEnds(c: Connection): void {
    c.link?.close()
    this.unjoinedAgain(c)
  }

  /** The connection no longer holds its peer's name. */
  private forget(c: Connection): void {
    if (c.link !== undefined && this.byName.get(c.link.peer) === c) this.byName.delete(c.link.peer)
  }

  /** A17 (from the mesh): retire the peer's live inbound link it parted with CROSS. */
  crossedLink(link: Link): void {
    const c = this.byName.get(link.peer)
    if (c?.link === link) this.toRetired(c)
  }
}

const quote = (text: string): string => JSON.stringify(clip(text, 64))

const byteLength = (parts: readonly Uint8Array[]): number => {
  let n = 0
  for (const p of parts) n += p.length
  return n
}
