/**
 * The connection and peer state machine. It knows links, names and liveness;
 * calls and replies pass through it untouched to the node above.
 *
 * A peer is reached over at most one live link: an *outbound* link (a
 * {@link Dialler}: our DEALER, our JOIN answered by STAY) or an *inbound*
 * link (their DEALER on our ROUTER, their JOIN answered by our STAY). When
 * both sides dial each other, the first link to become live stays: a JOIN
 * never replaces a live link (the joiner is told PART CROSS and stands by).
 * Only when each side accepted the other's JOIN before either saw a STAY do
 * both links come up; then the one dialled by the node whose name sorts
 * first (by UTF-8 bytes) survives and the other is told PART CROSS. Both
 * sides apply the same rules to the same events, so they agree without random
 * back-off, and no JOIN, forged or not, can take a live link away.
 */
import type { Clock } from './clock.js'
import { BilateralError, type ErrorCode } from './errors.js'
import { Codec, CodecError, FrameType, TICK, TOCK, encodeJoin, encodePart, encodeStay, type Frame } from './codec.js'
import type { ResolvedOptions } from './options.js'
import { Outbox } from './outbox.js'
import { DealerPort, RouterPort, ZapHandler, newContext, sharedContext, type HandshakeFailure, type SocketSettings } from './transport.js'

/** An encrypted node's keys and the proofs that bind names to them. */
export interface Identity {
  readonly publicKey: string
  readonly secretKey: string
  /** The JOIN proof that we hold our secret key, for the peer whose public key is `peer`. */
  proveTo(peer: string): Uint8Array
  /** Does `proof` show that the dialler holds the secret key of `claimed`? */
  verify(claimed: string, proof: Uint8Array | undefined): boolean
  /** May this public key (raw 32 bytes) complete a handshake with our ROUTER? */
  admits(publicKey: Uint8Array): boolean
  /** Is the peer named (Z85 key) `name` still allowed to join? Asked again at each of its pings, so a revoked key is dropped. */
  allows(name: string): boolean
}

/** Why a peer went down. */
export type DownReason =
  /** It sent PART: it closed, disconnected, or restarted and forgot us. */
  | 'PART'
  /**
   * The connection died: the peer's host closed it (the process exited or
   * was killed), or ZeroMQ's heartbeats (answered by libzmq's I/O thread,
   * not JavaScript) went unanswered for `peerTimeout`, so the host or the
   * network is gone.
   */
  | 'HEARTBEAT'
  /** The connection is alive but the peer has answered no ping for `stallTimeout`: its event loop is stuck. */
  | 'TIMEOUT'
  /** A key was refused: the peer no longer admits ours, or we no longer admit its (`authorizedKeys` changed). */
  | 'AUTH'
  /** Its connection was found closed when it came back under the same name. */
  | 'LOST'
  /** We called `disconnect()`. */
  | 'DISCONNECT'
  /** We called `close()`. */
  | 'CLOSED'

/** PART reasons (strings on the wire). */
export const Part = {
  CLOSE: 'CLOSE',
  CROSS: 'CROSS',
  NOT_JOINED: 'NOT_JOINED',
  NETWORK_MISMATCH: 'NETWORK_MISMATCH',
  LOOPBACK: 'LOOPBACK',
  DUPLICATE: 'DUPLICATE',
  WRONG_NAME: 'WRONG_NAME',
  VERSION: 'VERSION',
  PROTOCOL: 'PROTOCOL',
  AUTH: 'AUTH',
} as const

const REFUSALS: ReadonlySet<string> = new Set([
  Part.NETWORK_MISMATCH,
  Part.LOOPBACK,
  Part.DUPLICATE,
  Part.WRONG_NAME,
  Part.VERSION,
  Part.PROTOCOL,
  Part.AUTH,
])

export type DataFrame = Extract<Frame, { type: FrameType.CALL | FrameType.CAST | FrameType.REPLY | FrameType.ERROR }>

/** One live way to reach a peer. */
export interface Link {
  readonly peer: string
  readonly direction: 'outbound' | 'inbound'
  /** Queue a data frame; frames of one event-loop turn leave as one message. `id` ≥ 0 is a call to fail if it cannot be queued. */
  post(frame: readonly Uint8Array[], id?: number): void
  /** Resolves with whether everything posted so far was queued. */
  whenFlushed(): Promise<boolean>
  /** Send a control frame now, after anything already posted. Resolves false if it could not be queued. */
  send(parts: Uint8Array[]): Promise<boolean>
  /** Queue one message as it is, bypassing the outbox. */
  write(parts: Uint8Array[]): Promise<boolean>
}

/** The largest `maxPart` a JOIN or STAY can carry (a uint32). */
const MAX_PART = 0xffff_ffff

/** The batching every link shares: posts go through an {@link Outbox}, control frames flush it first. */
abstract class BatchingLink {
  abstract readonly peer: string
  private readonly outbox: Outbox

  /** @param maxMessageSize this node's: no packed part is larger, whatever the peer accepts. */
  constructor(
    unsent: (ids: number[]) => void,
    private readonly maxMessageSize: number,
  ) {
    this.outbox = new Outbox((parts) => this.write(parts), unsent)
  }

  /**
   * Pack frames into parts of up to `maxPart` bytes (capped by our own
   * limit), as the peer announced in its JOIN or STAY. A peer that announced
   * nothing may not read packed parts: it gets every envelope and body as a
   * part of its own.
   */
  packUpTo(maxPart: number | undefined): void {
    this.outbox.partLimit = Math.min(maxPart ?? 0, this.maxMessageSize)
  }

  abstract write(parts: Uint8Array[]): Promise<boolean>

  post(frame: readonly Uint8Array[], id?: number): void {
    this.outbox.post(frame, id)
  }

  whenFlushed(): Promise<boolean> {
    return this.outbox.whenFlushed()
  }

  send(parts: Uint8Array[]): Promise<boolean> {
    this.outbox.flush()
    return this.write(parts)
  }
}

/** What the mesh tells the node above it. */
export interface MeshEvents {
  up(peer: string): void
  down(peer: string, reason: DownReason): void
  refused(peer: string, error: BilateralError): void
  data(peer: string, frame: DataFrame, link: Link): void
  dropped(error: BilateralError): void
  /** Calls posted to `peer` whose batch could not be queued (its queue was full or its link gone). */
  unsent(peer: string, ids: number[]): void
  /** A ZMTP handshake on our ROUTER failed (a refused key, plaintext meeting CURVE). */
  handshakeFailed(error: BilateralError): void
}

class InboundLink extends BatchingLink implements Link {
  readonly direction = 'inbound'
  lastHeard: number
  /** A liveness probe is on its way. */
  probing = false
  lastProbe = 0
  /** When a probe found the connection closed (the peer is declared down once what it sent has been read). */
  goneAt: number | undefined

  constructor(
    readonly routingId: Buffer,
    readonly key: string,
    readonly peer: string,
    private readonly router: RouterPort,
    now: number,
    events: MeshEvents,
    maxMessageSize: number,
  ) {
    super((ids) => events.unsent(peer, ids), maxMessageSize)
    this.lastHeard = now
  }

  write(parts: Uint8Array[]): Promise<boolean> {
    return this.router.send(this.routingId, parts)
  }
}

interface Peer {
  readonly name: string
  dialler: Dialler | undefined
  inbound: InboundLink | undefined
  /** The live link, if the peer is active. */
  link: Link | undefined
}

export class Mesh {
  private readonly peers = new Map<string, Peer>()
  private readonly inbound = new Map<string, InboundLink>()
  /**
   * Inbound links that lost a cross-dial tie-break, by routing id, with when
   * to forget them. The peer may still send on them for a moment (replies to
   * calls that went out that way, calls made before it saw the PART); those
   * frames are delivered rather than answered NOT_JOINED.
   */
  private readonly retired = new Map<string, { link: InboundLink; until: number }>()
  private readonly router: RouterPort
  private readonly codec = new Codec()
  private readonly nameBytes: Buffer
  readonly settings: SocketSettings
  private readonly zap: ZapHandler | undefined
  private sweepTimer: unknown
  private readonly sweepEvery: number
  private lastSweep: number
  /** A connection to our ROUTER closed: find out which inbound link it served at the next sweep. */
  private probeInbound = false
  /** Messages dropped because they did not decode. */
  private dropped = 0
  private closed = false

  constructor(
    readonly options: ResolvedOptions,
    readonly clock: Clock,
    readonly events: MeshEvents,
    readonly identity: Identity | undefined,
  ) {
    this.nameBytes = Buffer.from(options.name)
    this.settings = {
      linger: options.linger,
      maxMessageSize: options.maxMessageSize,
      reconnectMin: options.reconnectMin,
      reconnectMax: options.reconnectMax,
      // A PING goes out at most pingInterval after the last traffic, so a
      // dead connection is closed at most peerTimeout after it.
      heartbeatInterval: Math.ceil(options.pingInterval),
      heartbeatTimeout: Math.max(1, Math.floor(options.peerTimeout - options.pingInterval)),
      // libzmq carries the TTL in tenths of a second, 16 bits.
      heartbeatTimeToLive: Math.min(Math.ceil(options.peerTimeout), 6_553_500),
      context: sharedContext(),
    }
    if (identity !== undefined) {
      this.settings.curve = { publicKey: identity.publicKey, secretKey: identity.secretKey }
      this.settings.context = newContext()
      this.zap = new ZapHandler(this.settings.context, (key) => identity.admits(key))
    }
    this.router = new RouterPort(
      this.settings,
      this.onRouterMessage,
      this.onSocketFailure,
      (failure) => this.events.handshakeFailed(handshakeError(failure)),
      () => (this.probeInbound = true),
    )
    this.sweepEvery = Math.max(5, this.options.pingInterval / 8)
    this.lastSweep = clock.now()
    this.scheduleSweep()
  }

  async listen(address: string): Promise<string> {
    await this.zap?.ready
    return this.router.bind(address)
  }

  /** Start dialling `name` at `address` and keep the link up until {@link stop}. */
  dial(name: string, address: string): void {
    const peer = this.peer(name)
    if (peer.dialler !== undefined) {
      throw new BilateralError('ALREADY_CONNECTED', `already connecting to ${name}`, { peer: name })
    }
    const dialler = new Dialler(this, name, address)
    // Someone dialled us first under this name: their link stays, ours waits.
    try {
      if (peer.link !== undefined) dialler.standby()
      else dialler.start(true)
    } catch (error) {
      this.forgetIfUnused(peer)
      throw error
    }
    peer.dialler = dialler
  }

  /** The JOIN we send to `peer` (with a proof of our key on an encrypted node). */
  joinFrameFor(peer: string): Uint8Array {
    const { network, name } = this.options
    return encodeJoin(network, name, this.identity?.proveTo(peer), peer, this.maxPart)
  }

  /** Is `name` something we dial? */
  isDialling(name: string): boolean {
    return this.peers.get(name)?.dialler !== undefined
  }

  /** Stop dialling `name`; part the link if it is ours. */
  stop(name: string): void {
    const peer = this.peers.get(name)
    const dialler = peer?.dialler
    if (peer === undefined || dialler === undefined) return
    const wasLink = peer.link === dialler
    if (wasLink) void dialler.send([encodePart(Part.CLOSE, 'disconnect')])
    peer.dialler = undefined
    dialler.stop()
    if (wasLink) this.linkLost(dialler, 'DISCONNECT')
    this.forgetIfUnused(peer)
  }

  /** Names of the active peers. */
  activeNames(): string[] {
    const names: string[] = []
    for (const peer of this.peers.values()) if (peer.link !== undefined) names.push(peer.name)
    return names
  }

  /** Each active peer and which side dialled the link that serves it. */
  links(): { peer: string; direction: 'outbound' | 'inbound' }[] {
    const out: { peer: string; direction: 'outbound' | 'inbound' }[] = []
    for (const peer of this.peers.values()) if (peer.link !== undefined) out.push({ peer: peer.name, direction: peer.link.direction })
    return out
  }

  /** The live link to `name`, if any. */
  linkTo(name: string): Link | undefined {
    return this.peers.get(name)?.link
  }

  /** Part every link, stop every dialler, close the sockets. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.clock.clearTimer(this.sweepTimer)
    const part = encodePart(Part.CLOSE, 'closing')
    for (const peer of [...this.peers.values()]) {
      const link = peer.link
      if (link !== undefined) {
        void link.send([part])
        peer.link = undefined
        this.events.down(peer.name, 'CLOSED')
      }
      peer.dialler?.stop()
    }
    this.peers.clear()
    this.inbound.clear()
    this.retired.clear()
    // The ZAP handler goes last: without it libzmq would admit any CURVE key.
    this.router.close()
    this.zap?.close()
  }

  /** Sizes of the internal tables, for leak checks, and how many messages were dropped undecodable. */
  stats(): { peers: number; inbound: number; dropped: number } {
    return { peers: this.peers.size, inbound: this.inbound.size, dropped: this.dropped }
  }

  // --- links -------------------------------------------------------------

  /** `link` has just been accepted (STAY sent or received). */
  linkUp(link: Link): void {
    const peer = this.peer(link.peer)
    const current = peer.link
    if (current === undefined) {
      peer.link = link
      if (link.direction === 'inbound') this.yieldDialler(peer)
      this.events.up(peer.name)
      return
    }
    if (current === link) return
    const keep = (this.weDialFirst(peer.name) ? peer.dialler : peer.inbound) ?? link
    const drop = keep === link ? current : link
    peer.link = keep
    void drop.send([encodePart(Part.CROSS, 'the other connection between us wins')])
    this.discard(drop, true)
  }

  /** `link` is gone for `reason`; the peer is down unless another link remains. */
  linkLost(link: Link, reason: DownReason): void {
    const peer = this.peers.get(link.peer)
    if (peer === undefined) return
    this.discard(link)
    if (peer.link !== link) return
    peer.link = undefined
    this.events.down(peer.name, reason)
    if (!this.closed) peer.dialler?.resume()
    this.forgetIfUnused(peer)
  }

  /** The peer parted `link` with CROSS: it serves the peer no more, but stragglers on it still count. */
  private linkRetired(link: InboundLink): void {
    const peer = this.peers.get(link.peer)
    if (peer?.link !== link) return this.discard(link, true)
    this.linkLost(link, 'PART')
    this.retire(link)
  }

  /** Keep hearing `link`'s stragglers for two join intervals. */
  private retire(link: InboundLink): void {
    this.retired.set(link.key, { link, until: this.clock.now() + 2 * this.options.joinInterval })
  }

  /** Remove `link` without events: inbound links are forgotten (or `retire`d for a grace period), diallers rest. */
  private discard(link: Link, retire = false): void {
    if (link instanceof InboundLink) {
      if (this.inbound.get(link.key) === link) this.inbound.delete(link.key)
      if (retire) this.retire(link)
      const peer = this.peers.get(link.peer)
      if (peer?.inbound === link) peer.inbound = undefined
    } else if (link instanceof Dialler) {
      link.standby()
    }
  }

  /** An inbound link came up: a dialler that would lose to it stops joining. */
  private yieldDialler(peer: Peer): void {
    if (peer.dialler !== undefined && !this.weDialFirst(peer.name)) peer.dialler.standby()
  }

  /** Does the link we dial win over the one `name` dials? */
  private weDialFirst(name: string): boolean {
    return Buffer.compare(this.nameBytes, Buffer.from(name)) < 0
  }

  private peer(name: string): Peer {
    let peer = this.peers.get(name)
    if (peer === undefined) {
      peer = { name, dialler: undefined, inbound: undefined, link: undefined }
      this.peers.set(name, peer)
    }
    return peer
  }

  private forgetIfUnused(peer: Peer): void {
    if (peer.dialler === undefined && peer.inbound === undefined && peer.link === undefined) this.peers.delete(peer.name)
  }

  // --- the ROUTER side -----------------------------------------------------

  private onRouterMessage = (routingId: Buffer, parts: Buffer[]): void => {
    if (this.closed) return
    const key = routingId.toString('latin1')
    let link = this.inbound.get(key)
    if (link === undefined && this.retired.has(key)) return this.onRetiredMessage(key, routingId, parts)
    const frames = this.decode(parts, link?.peer, routingId)
    if (frames === undefined) return
    if (link !== undefined) link.lastHeard = this.clock.now()
    for (const frame of frames) {
      if (frame.type === FrameType.JOIN) {
        this.onJoin(routingId, key, frame).catch(this.onSocketFailure)
        // Frames batched after the JOIN belong to the link it just made (if it was accepted at once).
        link = this.inbound.get(key)
      } else if (link === undefined) {
        // A dialler we do not know (we restarted, or it skipped JOIN): tell it to join.
        if (frame.type !== FrameType.PART && frame.type !== FrameType.TOCK) {
          void this.router.send(routingId, [encodePart(Part.NOT_JOINED, 'send JOIN first')])
          return
        }
      } else if (frame.type === FrameType.TICK) {
        if (this.identity !== undefined && !this.identity.allows(link.peer)) return this.revoke(link)
        void link.send([TOCK])
      } else if (frame.type === FrameType.PART) {
        // CROSS while our own dial is joining: the peer yielded to our dial, whose
        // STAY is on its way; keep using this link (it stays open a while) until then.
        if (frame.reason !== Part.CROSS) this.linkLost(link, 'PART')
        else if (this.peers.get(link.peer)?.dialler?.state !== 'joining') this.linkRetired(link)
      } else if (frame.type === FrameType.TOCK || frame.type === FrameType.STAY) {
        // Liveness only.
      } else {
        this.events.data(link.peer, frame, link)
      }
    }
  }

  /** Traffic on a link that lost a cross-dial: data still counts; a JOIN starts over. */
  private onRetiredMessage(key: string, routingId: Buffer, parts: Buffer[]): void {
    const entry = this.retired.get(key)
    if (entry === undefined || entry.until < this.clock.now()) {
      this.retired.delete(key)
      return this.onRouterMessage(routingId, parts)
    }
    const frames = this.decode(parts, entry.link.peer)
    if (frames === undefined) return
    for (const frame of frames) {
      if (frame.type === FrameType.JOIN) {
        this.retired.delete(key)
        return this.onRouterMessage(routingId, parts)
      }
      if (frame.type === FrameType.PART) this.retired.delete(key)
      else if (
        frame.type === FrameType.CALL ||
        frame.type === FrameType.CAST ||
        frame.type === FrameType.REPLY ||
        frame.type === FrameType.ERROR
      ) {
        this.events.data(entry.link.peer, frame, entry.link)
      }
    }
  }

  private async onJoin(
    routingId: Buffer,
    key: string,
    join: { network: string; name: string; proof?: Uint8Array; target?: string; maxPart?: number },
  ): Promise<void> {
    const refuse = (reason: string, code: ErrorCode, message: string): void => {
      void this.router.send(routingId, [encodePart(reason, message)])
      this.events.refused(join.name, new BilateralError(code, message, { peer: join.name }))
    }
    if (join.network !== this.options.network) {
      return refuse(
        Part.NETWORK_MISMATCH,
        'NETWORK_MISMATCH',
        `network ${JSON.stringify(join.network)} is not ours (${JSON.stringify(this.options.network)})`,
      )
    }
    if (join.target !== undefined && join.target !== this.options.name) {
      return refuse(Part.WRONG_NAME, 'WRONG_NAME', `this is ${this.options.name}, not ${join.target}`)
    }
    if (join.name.length === 0 || Buffer.byteLength(join.name) > 255)
      return refuse(Part.PROTOCOL, 'PROTOCOL', 'a name must be 1 to 255 bytes')
    if (join.name === this.options.name) return refuse(Part.LOOPBACK, 'LOOPBACK', 'a node cannot join itself')
    if (this.identity !== undefined && !this.identity.verify(join.name, join.proof)) {
      return refuse(Part.AUTH, 'AUTH', 'the JOIN does not prove that the dialler holds the key it claims as its name')
    }
    const existing = this.inbound.get(key)
    if (existing !== undefined) {
      if (existing.peer === join.name) {
        existing.packUpTo(join.maxPart)
        void existing.send([this.stayFrame()])
      } else refuse(Part.PROTOCOL, 'PROTOCOL', `this connection already joined as ${existing.peer}`)
      return
    }
    const other = this.peers.get(join.name)?.inbound
    if (other !== undefined) {
      // Someone already holds this name through another connection. It keeps
      // it while that connection is alive; a send to a closed one fails.
      const alive = (await this.router.deliver(other.routingId, [TOCK])) !== 'gone'
      if (this.closed) return
      const peer = this.peers.get(join.name)
      if (alive && peer?.inbound === other) {
        return refuse(Part.DUPLICATE, 'DUPLICATE', `${join.name} is already connected`)
      }
      if (peer?.inbound === other) this.linkLost(other, 'LOST')
      if (this.inbound.has(key) || this.peers.get(join.name)?.inbound !== undefined) return
    }
    const peer = this.peer(join.name)
    if (peer.link !== undefined && peer.link === peer.dialler) {
      // A live link we dialled is never replaced by a JOIN: it is either the
      // peer's own redundant dial, which yields, or someone claiming its name.
      void this.router.send(routingId, [encodePart(Part.CROSS, 'the connection we dialled is live')])
      return
    }
    const link = new InboundLink(routingId, key, join.name, this.router, this.clock.now(), this.events, this.options.maxMessageSize)
    link.packUpTo(join.maxPart)
    this.inbound.set(key, link)
    peer.inbound = link
    void link.send([this.stayFrame()])
    this.linkUp(link)
  }

  // --- shared --------------------------------------------------------------

  /** Frames that arrived on a dialler's socket. */
  onDiallerMessage(dialler: Dialler, parts: Buffer[]): void {
    if (this.closed) return
    const frames = this.decode(parts, dialler.peer)
    if (frames === undefined) return
    dialler.lastHeard = this.clock.now()
    for (const frame of frames) {
      switch (frame.type) {
        case FrameType.STAY:
          this.onStay(dialler, frame)
          break
        case FrameType.PART:
          this.onPart(dialler, frame.reason, frame.message)
          break
        case FrameType.TICK:
          void dialler.send([TOCK])
          break
        case FrameType.TOCK:
        case FrameType.JOIN:
          break
        default:
          // Late traffic on a link that just lost a cross-dial still counts.
          this.events.data(dialler.peer, frame, dialler)
      }
    }
  }

  /** What JOIN and STAY announce: our maxMessageSize, as far as the field's 32 bits go. */
  private get maxPart(): number {
    return Math.min(this.options.maxMessageSize, MAX_PART)
  }

  private stayFrame(): Uint8Array {
    return encodeStay(this.options.network, this.options.name, this.maxPart)
  }

  private onStay(dialler: Dialler, stay: { network: string; name: string; maxPart?: number }): void {
    if (dialler.state === 'standby') {
      // The peer took our JOIN after we yielded to its own dial: withdraw it.
      void dialler.send([encodePart(Part.CROSS, 'the other connection between us wins')])
      return
    }
    if (dialler.state !== 'joining') return
    if (stay.name !== dialler.peer || stay.network !== this.options.network) {
      const code = stay.name !== dialler.peer ? 'WRONG_NAME' : 'NETWORK_MISMATCH'
      const message =
        code === 'WRONG_NAME'
          ? `expected ${dialler.peer} at ${dialler.address}, found ${stay.name}`
          : `network ${JSON.stringify(stay.network)} is not ours`
      void dialler.send([encodePart(code, message)])
      this.events.refused(dialler.peer, new BilateralError(code, message, { peer: dialler.peer }))
      dialler.retryLater()
      return
    }
    dialler.packUpTo(stay.maxPart)
    dialler.joined()
    this.linkUp(dialler)
  }

  private onPart(dialler: Dialler, reason: string, message: string): void {
    // A dialler standing by has no join in progress to refuse or restart.
    if (dialler.state === 'standby' || dialler.state === 'stopped') return
    const peer = this.peers.get(dialler.peer)
    if (reason === Part.CROSS) {
      // Our link lost the tie-break: the peer's own dial serves it (its JOIN is on the way).
      if (peer?.link === dialler) this.linkLost(dialler, 'PART')
      else dialler.standby()
      return
    }
    if (REFUSALS.has(reason)) {
      const code = reason as ErrorCode
      this.events.refused(dialler.peer, new BilateralError(code, `${dialler.peer} refused our join: ${message}`, { peer: dialler.peer }))
      if (peer?.link === dialler) this.linkLost(dialler, reason === Part.AUTH ? 'AUTH' : 'PART')
      else dialler.retryLater()
      return
    }
    if (peer?.link === dialler) this.linkLost(dialler, 'PART')
    // NOT_JOINED: the peer restarted and forgot us; join again right away.
    if (reason === Part.NOT_JOINED) dialler.rejoin()
  }

  /**
   * Decode a message, or report it dropped (and answer PART VERSION to a
   * ROUTER peer speaking another version). Errors made here carry no stack:
   * it would only show this receive loop, and capturing it was most of the
   * cost of a flood of junk.
   */
  private decode(parts: Buffer[], peer: string | undefined, routingId?: Buffer): Frame[] | undefined {
    const stackTraceLimit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    let error: unknown
    let report: BilateralError
    try {
      return this.codec.decodeMessage(parts)
    } catch (failure) {
      error = failure
      const message = failure instanceof Error ? failure.message : String(failure)
      report = new BilateralError('PROTOCOL', `dropped a message: ${message}`, { peer, cause: failure })
    } finally {
      Error.stackTraceLimit = stackTraceLimit
    }
    // Listeners are the application's code: they run with the usual stack limit.
    this.dropped++
    this.events.dropped(report)
    if (routingId !== undefined && error instanceof CodecError && error.code === 'VERSION') {
      void this.router.send(routingId, [encodePart(Part.VERSION, error.message)])
    }
    return undefined
  }

  /** A receive loop or a listener above us failed on one message; the loop goes on. */
  onSocketFailure = (error: unknown): void => {
    this.events.dropped(new BilateralError('INTERNAL', `failed while handling a message: ${String(error)}`, { cause: error }))
  }

  // --- liveness --------------------------------------------------------------

  private scheduleSweep(): void {
    this.sweepTimer = this.clock.setTimer(() => {
      if (this.closed) return
      this.sweep()
      this.scheduleSweep()
    }, this.sweepEvery)
  }

  /**
   * Ping what we dialled; declare down a link whose connection died
   * (HEARTBEAT) or whose peer has answered nothing for `stallTimeout`
   * (TIMEOUT). Silence alone, shorter than that, is a busy peer, not a dead
   * one: ZeroMQ's heartbeats tell the two apart.
   */
  private sweep(): void {
    const now = this.clock.now()
    const { pingInterval, peerTimeout, stallTimeout } = this.options
    // Our own event loop was blocked: the silence that caused is ours, not the peers'.
    const late = now - this.lastSweep - this.sweepEvery
    if (late > 3 * this.sweepEvery) this.forgive(late, now)
    this.lastSweep = now
    const probeAll = this.probeInbound
    this.probeInbound = false
    for (const [key, { until }] of this.retired) if (until < now) this.retired.delete(key)
    for (const peer of [...this.peers.values()]) {
      const link = peer.link
      if (link instanceof Dialler) {
        if (link.droppedAt !== undefined && now - link.droppedAt >= this.sweepEvery) {
          // Reconnected meanwhile: carry on (a peer that forgot us answers NOT_JOINED). Otherwise read what
          // it sent before the drop (replies, a PART) first, for at most peerTimeout.
          if (link.reconnected()) link.droppedAt = undefined
          else if (!link.unread() || now - link.droppedAt >= peerTimeout) this.linkLost(link, link.authRefused ? 'AUTH' : 'HEARTBEAT')
        } else if (now - link.lastHeard > stallTimeout) {
          this.linkLost(link, 'TIMEOUT')
        } else if (now - link.lastTick >= pingInterval) {
          link.lastTick = now
          void link.send([TICK])
        }
      } else if (link instanceof InboundLink) {
        if (link.goneAt !== undefined) {
          // Its connection is closed; what it sent before may still wait in our queue. Read that first.
          if (!this.router.readable || now - link.goneAt >= peerTimeout) this.linkLost(link, 'HEARTBEAT')
        } else if (now - link.lastHeard > stallTimeout) {
          this.linkLost(link, 'TIMEOUT')
        } else if (probeAll || (now - link.lastHeard > pingInterval + this.sweepEvery && now - link.lastProbe >= pingInterval)) {
          void this.probe(link, now)
        }
      }
    }
  }

  /** Is the connection under a quiet inbound link still there? ROUTER_MANDATORY says 'gone' once libzmq has closed it. */
  private async probe(link: InboundLink, now: number): Promise<void> {
    if (link.probing) return
    link.probing = true
    link.lastProbe = now
    const delivery = await this.router.deliver(link.routingId, [TOCK])
    link.probing = false
    if (delivery === 'gone') link.goneAt ??= this.clock.now()
  }

  /** Our sweep ran `late` ms late: move every link's last-heard time forward by as much (never past now). */
  private forgive(late: number, now: number): void {
    for (const peer of this.peers.values()) {
      const link = peer.link as InboundLink | Dialler | undefined
      if (link !== undefined) link.lastHeard = Math.min(now, link.lastHeard + late)
    }
  }

  /** The peer's key is no longer authorised: tell it, and drop the link. */
  private revoke(link: InboundLink): void {
    void link.send([encodePart(Part.AUTH, 'your key is no longer authorised here')])
    this.linkLost(link, 'AUTH')
  }
}

/** Our side of a link we dial: a DEALER, the JOIN handshake and reconnection. */
export class Dialler extends BatchingLink implements Link {
  readonly direction = 'outbound'
  state: 'joining' | 'active' | 'standby' | 'stopped' = 'standby'
  lastHeard = 0
  lastTick = 0
  /** When the connection of the active link closed (the sweep then declares the peer down). */
  droppedAt: number | undefined
  /** Since then, the peer's handshake refused our key. */
  authRefused = false
  private port: DealerPort | undefined
  private joinFrame: Uint8Array | undefined
  /** A JOIN was sent on this socket (and may still be queued). */
  private joinQueued = false
  private timer: unknown
  private attempt = 0

  constructor(
    private readonly mesh: Mesh,
    readonly peer: string,
    readonly address: string,
  ) {
    super((ids) => mesh.events.unsent(peer, ids), mesh.options.maxMessageSize)
  }

  /** Has our socket's connection come back (per the socket monitor, not merely a message read)? */
  reconnected(): boolean {
    return this.port?.up === true
  }

  /** Are messages waiting on our socket? */
  unread(): boolean {
    return this.port?.readable === true
  }

  /** On our socket; once a standby socket has closed, on whatever link now serves the peer. */
  write(parts: Uint8Array[]): Promise<boolean> {
    if (this.port !== undefined) return this.port.send(parts)
    const other = this.mesh.linkTo(this.peer)
    return other === undefined || other === this ? Promise.resolve(false) : other.write(parts)
  }

  /**
   * Open a fresh socket and join now, then every `joinInterval` until
   * answered. If the socket cannot be made (out of file descriptors, say),
   * the first attempt throws to `connect()`; later ones report and retry.
   */
  start(first = false): void {
    if (this.state === 'stopped') return
    this.clearTimer()
    this.closePort()
    this.state = 'joining'
    this.joinQueued = false
    try {
      this.port = this.open()
    } catch (error) {
      const code = (error as { code?: unknown }).code === 'EINVAL' ? 'INVALID_ARGUMENT' : 'SOCKET'
      const failure = new BilateralError(code, `cannot dial ${this.address}: ${(error as Error).message}`, {
        peer: this.peer,
        cause: error,
      })
      if (first) throw failure
      this.mesh.events.refused(this.peer, failure)
      this.setTimer(this.backoff(), () => this.start())
      return
    }
    this.sendJoin()
  }

  private open(): DealerPort {
    return new DealerPort(
      this.address,
      this.mesh.identity === undefined ? undefined : this.peer,
      this.mesh.settings,
      (parts) => this.mesh.onDiallerMessage(this, parts),
      (failure) => {
        if (failure.code === 'AUTH' && this.droppedAt !== undefined) this.authRefused = true
        this.mesh.events.refused(this.peer, handshakeError(failure, this.peer))
      },
      this.mesh.onSocketFailure,
      () => {
        if (this.state === 'active') this.droppedAt ??= this.mesh.clock.now()
        // Whoever answers the next connection may be another process, perhaps of an earlier release: pack again after its STAY.
        this.packUpTo(undefined)
      },
    )
  }

  /**
   * Send JOIN, then again every `joinInterval` until answered. The first one
   * queues until the connection is up; re-sends go out only while connected,
   * so an unreachable peer does not get a burst of stale JOINs on reconnect.
   */
  sendJoin(): void {
    if (this.state !== 'joining') return
    this.joinFrame ??= this.mesh.joinFrameFor(this.peer)
    this.setTimer(this.mesh.options.joinInterval, () => this.sendJoin())
    if (this.joinQueued && this.port?.connected !== true) return
    this.joinQueued = true
    void this.send([this.joinFrame])
  }

  /** STAY received. */
  joined(): void {
    this.clearTimer()
    this.state = 'active'
    this.attempt = 0
    this.droppedAt = undefined
    this.authRefused = false
    this.lastHeard = this.lastTick = this.mesh.clock.now()
  }

  /** The join was refused: try again after the back-off, on the same socket. */
  retryLater(): void {
    if (this.state === 'stopped') return
    this.state = 'joining'
    this.setTimer(this.backoff(), () => this.sendJoin())
  }

  /** The peer went down: reconnect after the back-off, with a fresh socket. */
  resume(): void {
    if (this.state === 'stopped') return
    this.state = 'joining'
    this.setTimer(this.backoff(), () => this.start())
  }

  /** The peer forgot us (it restarted): join again at once on this socket. */
  rejoin(): void {
    if (this.state === 'stopped' || this.port === undefined) return
    this.state = 'joining'
    this.sendJoin()
  }

  /**
   * Another link serves this peer: stop joining. Once stragglers have had time
   * to arrive, close the socket, or start joining again if that other link
   * never came up.
   */
  standby(): void {
    if (this.state === 'stopped') return
    this.state = 'standby'
    this.setTimer(this.mesh.options.joinInterval, () => {
      if (this.mesh.linkTo(this.peer) === undefined) return this.resume()
      this.closePort()
    })
  }

  stop(): void {
    this.state = 'stopped'
    this.clearTimer()
    this.closePort()
  }

  /**
   * Close our socket. Packing waits for the next STAY: until then, what we
   * send goes to whatever answers a new socket, or (write) onto another link,
   * and either may not read our packed parts.
   */
  private closePort(): void {
    this.port?.close()
    this.port = undefined
    this.packUpTo(undefined)
  }

  /** Capped exponential back-off with jitter in [½, 1] of the step. */
  private backoff(): number {
    const { reconnectMin, reconnectMax } = this.mesh.options
    const step = Math.min(reconnectMax, reconnectMin * 2 ** Math.min(this.attempt++, 30))
    return step / 2 + (Math.random() * step) / 2
  }

  private setTimer(ms: number, fn: () => void): void {
    this.clearTimer()
    this.timer = this.mesh.clock.setTimer(fn, ms)
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.mesh.clock.clearTimer(this.timer)
    this.timer = undefined
  }
}

function handshakeError(failure: HandshakeFailure, peer?: string): BilateralError {
  const what = failure.code === 'AUTH' ? 'key refused during the handshake' : 'handshake failed (is one side encrypted and the other not?)'
  return new BilateralError(failure.code, `${what} with ${failure.address}: ${failure.message}`, { peer })
}
