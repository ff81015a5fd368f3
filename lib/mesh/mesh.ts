/**
 * The mesh: it owns the ROUTER and the diallers, and tells the node above
 * about peers coming and going and about data frames, each with the link
 * that carried it. Calls and replies pass through it untouched. Its parts
 * are state machines of their own, each behind a narrow host interface: the
 * dialling side (dial.ts, PROTOCOL.md 10.1), the accepting side (accept.ts,
 * 10.2), liveness (liveness.ts, 11) and the peer table with its cross-dial
 * rule (peers.ts, 12); this file wires them to the sockets and to each
 * other.
 */
import type { Clock } from '../clock.js'
import { BilateralError, clip, type ErrorCode } from '../errors.js'
import type { ResolvedOptions } from '../options.js'
import { isPart, type CodecError } from '../wire/codec.js'
import {
  MAX_NAME_BYTES,
  MAX_UINT32,
  Part,
  TICK,
  encodeJoin,
  encodePart,
  encodeStay,
  type DataFrame,
  type Join,
  type Stay,
  type Window,
} from '../wire/frames.js'
import { MAX_BYTES } from './outbox.js'
import { Acceptor, type AcceptHost, type JoinVerifier } from './accept.js'
import { Admission } from './admission.js'
import { Dialler, handshakeError, type DialHost, type DialPort, type DialState } from './dial.js'
import { FDS_PER_CONNECTION, fdBudget } from './fds.js'
import { JoinPace } from './join-pace.js'
import { Link, type LinkOptions } from './link.js'
import { PeerTable, type DownReason } from './peers.js'

export type { DownReason } from './peers.js'
import { Liveness, type LivenessHost } from './liveness.js'
import { DialSockets, NoRoom, RouterPort, SocketContext, type DialEvents, type Delivery, type SocketSettings } from './sockets.js'

/** What a PART AUTH says, from either side: the key this link was admitted under is refused now (PROTOCOL.md 11, A13, A18). */
const REVOKED = 'your key is no longer authorised here'
/** An encrypted node's keys, as the mesh uses them. */
export interface Identity {
  readonly publicKey: string
  /** While the proofs cannot be made yet (the crypto library is loading), the promise of when they can. */
  pending(): Promise<void> | undefined
  /** The proof for our JOIN to `peer`: answering `challenge` when we have one, else the static proof. */
  proof(peer: string, challenge: Uint8Array | undefined): Uint8Array
  readonly verifier: JoinVerifier
  /** May this public key (raw 32 bytes) complete a handshake with our ROUTER? */
  admitsKey(key: Uint8Array): boolean
  /** Is the peer named (Z85 key) `name` still allowed? Asked again every pingInterval, so a revoked key is cut. */
  allows(name: string): boolean
}

/** A peer being dialled, as peers() shows it. */
function dialling(name: string, dialler: Dialler): PeerSnapshot {
  const state = shown(dialler)
  const waiting = state === 'backoff' || state === 'refused'
  return {
    name,
    state,
    direction: 'outbound',
    address: dialler.address,
    since: dialler.since,
    retryAt: waiting ? dialler.retryAt : undefined,
    failure: dialler.lastFailure,
    refusal: dialler.lastRefusal,
  }
}

/** A dialler's state as peers() names it: `joining` split by whether it has a connection, or a refused JOIN waits. */
function shown(dialler: Dialler): PeerSnapshot['state'] {
  switch (dialler.state) {
    case 'joining':
      return dialler.refused ? 'refused' : dialler.connected ? 'joining' : 'connecting'
    case 'backoff':
    case 'standby':
      return dialler.state
    default:
      return 'joining'
  }
}

/** A peer as the mesh sees it now (times on its clock). */
export interface PeerSnapshot {
  name: string
  /** up; dialled: connecting (no connection yet), joining (JOIN sent), refused (a refused JOIN retried after back-off), backoff (a new socket after it), standby (the peer's own link is coming up instead). */
  state: 'up' | 'connecting' | 'joining' | 'refused' | 'backoff' | 'standby'
  direction: 'outbound' | 'inbound'
  address: string | undefined
  since: number
  retryAt?: number | undefined
  rtt?: number | undefined
  failure?: string | undefined
  refusal?: ErrorCode | undefined
}

/** What the mesh tells the node above it. */
export interface MeshEvents {
  up(peer: string, link: Link): void
  /** `peer` is down; `link` is the one that served it. */
  down(peer: string, reason: DownReason, link: Link): void
  /**
   * A JOIN was refused: `ours`, our own dial's (by the peer, or by us on
   * reading its STAY); else one made to us, under whatever name its sender
   * claimed (so a stranger can make it name anyone).
   */
  refused(peer: string, error: BilateralError, ours: boolean): void
  data(link: Link, frame: DataFrame): void
  dropped(error: BilateralError): void
  /** A ZMTP handshake on our ROUTER failed (a refused key, plaintext meeting CURVE). */
  handshakeFailed(error: BilateralError): void
  /** A key outside authorizedKeys tried to connect. */
  authRejected(key: string): void
  /** A connection was refused at the handshake for a limit. */
  connectionRefused(address: string, why: string): void
  /** A dial attempt began: a new socket to `address`. */
  dialling(peer: string, address: string): void
  /** The next dial attempt comes after `ms`. */
  backingOff(peer: string, ms: number): void
}

/** What this node's links announce and hold. */
export interface MeshLimits {
  /** Our receive window, announced in JOIN and STAY. */
  readonly window: Window
  /** Bytes held for one peer while its window is full. */
  readonly backlog: number
  /** Messages libzmq queues per connection to the peer. */
  readonly sendQueue: number
  /** This node's incarnation. */
  readonly incarnation: Uint8Array
}

/** The mesh's part of `stats()`. */
export interface MeshStats {
  /** Peers known: active, dialled, or holding an inbound link. */
  peers: number
  /** Inbound links joined. */
  inbound: number
  /** Connections on our ROUTER, in any state. */
  connections: number
  /** Of those, not joined yet. */
  unjoined: number
  /** Of those, ignored (missed the join deadline, broke the protocol, faked a disconnect). */
  ignored: number
  /** Messages from peers dropped: undecodable, or from connections that may send nothing. */
  dropped: number
  /** Handshakes refused for a limit. */
  refusedConnections: number
}

/** A dial by address alone, until its first STAY names the peer (plaintext only: an encrypted dial needs the peer's key). */
interface Unnamed {
  readonly dialler: Dialler
  readonly watch: AddressDial
}

/** Who started a dial by address alone hears of it through this (mesh events name such a dial by its address). */
export interface AddressDial {
  /** A STAY named the peer: from now on this is the dial of that name (its link comes up next). */
  named(name: string): void
  /** Its own attempt was refused, or failed (ALREADY_CONNECTED: the node there is one of our peers already). */
  refused(error: BilateralError): void
}

/**
 * How stop() parts a link we dialled: a PART CLOSE (`part`), a PART AUTH
 * (`auth`: its key is no longer admitted), or nothing (`quiet`: it left, it
 * is going anyway, and a PART would hold our socket open for it).
 */
export type Parting = 'part' | 'auth' | 'quiet'

export class Mesh {
  private readonly table: PeerTable<Dialler>
  /** Dials by address alone, by address, until named. */
  private readonly unnamed = new Map<string, Unnamed>()
  private readonly router: RouterPort
  /** The sockets we dial from. */
  private readonly dials: DialSockets
  private readonly acceptor: Acceptor
  private readonly admission: Admission
  private readonly liveness: Liveness
  private readonly settings: SocketSettings
  private readonly linkOptions: LinkOptions
  private readonly fds = fdBudget()
  private readonly dialHost: DialHost
  /** Messages that did not decode on diallers' sockets. */
  private dialDropped = 0
  /**
   * While we dial anyone, the process stays alive, as it did when each dialler
   * always had a socket open: between sockets (back-off) nothing else holds it.
   */
  private release: (() => void) | undefined
  private closed = false

  constructor(
    readonly options: ResolvedOptions,
    readonly clock: Clock,
    readonly events: MeshEvents,
    readonly identity: Identity | undefined,
    private readonly limits: MeshLimits,
  ) {
    this.linkOptions = { window: limits.window, backlog: limits.backlog, queue: limits.sendQueue }
    this.settings = {
      linger: options.linger,
      maxMessageSize: options.maxMessageSize,
      reconnectMin: options.reconnectMin,
      reconnectMax: options.reconnectMax,
      // A PING every peerTimeout / 2, which must be answered within peerTimeout / 2: a dead connection is
      // closed at most peerTimeout after its last traffic. No TTL: each side closes on its own heartbeat.
      // Not more often, and no TTL, because libzmq 4.3.5 cancels a timer by walking all its I/O thread's
      // timers (poller_base.cpp, cancel_timer), and the first message after each PING sent cancels one (its
      // timeout), as does the first after each PING with a TTL received: with 2,000 connections in a process
      // those walks took most of a core, and a mesh of 100 members in five processes never formed.
      heartbeatInterval: Math.ceil(options.peerTimeout / 2),
      heartbeatTimeout: Math.max(1, Math.floor(options.peerTimeout / 2)),
      heartbeatTimeToLive: 0,
      handshakeInterval: Math.ceil(options.joinTimeout),
      sendQueue: limits.sendQueue,
      context: SocketContext.take(),
    }
    if (identity !== undefined) this.settings.curve = { publicKey: identity.publicKey, secretKey: options.keypair!.secretKey }
    const mesh = this
    this.table = new PeerTable<Dialler>({
      name: options.name,
      get closing() {
        return mesh.closed
      },
      up: (peer, link) => events.up(peer, link),
      down: (peer, reason, link) => events.down(peer, reason, link),
      retireInbound: (inbound) => this.acceptor.retire(inbound),
      withdraw: (outbound) => void outbound.send([encodePart(Part.CROSS, 'the other connection between us wins')]),
      holdsInbound: (name) => this.acceptor.linkOf(name) !== undefined,
    })
    this.admission = new Admission(options, {
      clock,
      admitsKey: (key) => identity?.admitsKey(key) ?? true,
      roomForConnection: () => this.fds.take(FDS_PER_CONNECTION),
      refusedConnection: (address, why) => events.connectionRefused(address, why),
      get closed() {
        return mesh.closed
      },
    })
    this.dialHost = this.makeDialHost()
    this.acceptor = new Acceptor(this.acceptHost())
    this.router = new RouterPort(this.settings, this.admission, {
      connect: (id) => this.acceptor.connected(id),
      message: (id, parts) => this.acceptor.message(id, parts),
      disconnect: (id) => this.acceptor.disconnected(id),
      handshakeFailed: (failure) => events.handshakeFailed(handshakeError(failure)),
      failed: this.failed,
    })
    this.dials = new DialSockets(this.settings, (fds) => this.fds.take(fds))
    this.liveness = new Liveness(this.livenessHost(), {
      pingInterval: options.pingInterval,
      stallTimeout: options.stallTimeout,
      checkKeys: identity !== undefined,
    })
  }

  listen(address: string): Promise<string> {
    return this.router.bind(address)
  }

  /** Start dialling `name` at `address` and keep the link up until {@link stop}. Throws SOCKET when no socket can be made. */
  dial(name: string, address: string): void {
    const peer = this.table.entry(name)
    if (peer.dialler !== undefined) {
      throw new BilateralError('ALREADY_CONNECTED', `already connecting to ${name}`, { peer: name })
    }
    const dialler = new Dialler(this.dialHost, name, address)
    try {
      // D2: someone dialled us first under this name: their link stays, ours waits.
      if (peer.live !== undefined) dialler.standby()
      else dialler.start(true)
    } catch (error) {
      this.table.forgetIfUnused(peer)
      throw error
    }
    // The JOIN's proof needs the crypto library (ready about 50 ms into a process): until then the socket connects, and the JOIN waits.
    void this.identity?.pending()?.then(() => {
      if (peer.dialler === dialler && !this.closed) dialler.joinNow()
    })
    peer.dialler = dialler
    this.release ??= this.clock.hold()
  }

  /**
   * Dial whichever node listens at `address` (plaintext): its JOIN names no
   * target, and the first STAY names the peer; from then on it is the dial
   * of that name, as {@link dial} makes (one of that name that has not come
   * up yet gives way to it). `watch` hears of it. Throws SOCKET when no
   * socket can be made, ALREADY_CONNECTED if this address is being dialled
   * so already.
   */
  dialAddress(address: string, watch: AddressDial): void {
    if (this.unnamed.has(address)) throw new BilateralError('ALREADY_CONNECTED', `already dialling ${address}`)
    const dialler = new Dialler(this.dialHost, undefined, address)
    dialler.start(true)
    this.unnamed.set(address, { dialler, watch })
    this.release ??= this.clock.hold()
  }

  /** Stop a dial by address alone that has not learnt its peer's name. */
  stopAddress(address: string): void {
    const entry = this.unnamed.get(address)
    if (entry === undefined) return
    this.unnamed.delete(address)
    entry.dialler.stop(false)
    this.releaseIfIdle()
  }

  /** The name of the peer we dial at `address` (by name, or by address once named), if any. */
  dialledAt(address: string): string | undefined {
    for (const peer of this.table.values()) if (peer.dialler?.address === address && peer.dialler.state !== 'stopped') return peer.name
    return undefined
  }

  /**
   * A dial by address alone got its first STAY: it dials that name from now
   * on. A dial of that name already here has not come up (checkStay refused
   * a STAY naming a peer with a live link): this one, whose link is about to,
   * takes its place.
   */
  private nameDial(dialler: Dialler): void {
    const entry = this.unnamed.get(dialler.address)
    if (entry?.dialler !== dialler) return
    this.unnamed.delete(dialler.address)
    const peer = this.table.entry(dialler.peer)
    if (peer.dialler !== undefined && peer.dialler !== dialler) peer.dialler.stop(false)
    peer.dialler = dialler
    entry.watch.named(dialler.peer)
  }

  /**
   * The name a STAY gives a dial by address alone. A listener of ours would
   * have refused our JOIN under its own name (LOOPBACK), and a node we are
   * linked to answers it CROSS or DUPLICATE, not STAY: a STAY under our name,
   * or under a name linked to us already, is another node's.
   */
  private checkUnnamedStay(address: string, name: string): { code: ErrorCode; message: string } | undefined {
    const shown = JSON.stringify(clip(name, 64))
    if (name.length === 0 || Buffer.byteLength(name) > MAX_NAME_BYTES) {
      return {
        code: 'WRONG_NAME',
        message: `the node at ${address} gave a name of ${Buffer.byteLength(name)} bytes (1 to ${MAX_NAME_BYTES} allowed)`,
      }
    }
    if (name === this.options.name) return { code: 'WRONG_NAME', message: `the node at ${address} answered under our own name` }
    if (this.table.liveLink(name) !== undefined) {
      return { code: 'DUPLICATE', message: `the node at ${address} says it is ${shown}, which is linked to us already` }
    }
    return undefined
  }

  /** Let the process exit once we dial no one. */
  private releaseIfIdle(): void {
    if (this.unnamed.size > 0 || this.table.dialling()) return
    this.release?.()
    this.release = undefined
  }

  /** Is `name` something we dial? */
  isDialling(name: string): boolean {
    return this.table.get(name)?.dialler !== undefined
  }

  /** Our dialler's state for `name`, and why its last attempt failed. */
  dialState(
    name: string,
  ): { state: DialState; address: string; failure: string | undefined; refusal: ErrorCode | undefined; refusals: number } | undefined {
    const d = this.table.get(name)?.dialler ?? this.unnamed.get(name)?.dialler
    return d === undefined
      ? undefined
      : { state: d.state, address: d.address, failure: d.lastFailure, refusal: d.lastRefusal, refusals: d.refusals }
  }

  /**
   * Stop dialling `name`; part the link if it is ours: `part` with PART
   * CLOSE, `auth` with PART AUTH (its key no longer admitted), `quiet` with
   * none (a member that left is going anyway). The trust the dial gave its
   * key ends with it.
   */
  stop(name: string, how: Parting = 'part'): void {
    const peer = this.table.get(name)
    const dialler = peer?.dialler
    if (peer === undefined || dialler === undefined) return
    const link = dialler.link
    const wasLive = link !== undefined && peer.live === link
    const parting = wasLive && how !== 'quiet'
    if (parting) {
      void link.send([how === 'auth' ? encodePart(Part.AUTH, REVOKED) : encodePart(Part.CLOSE, 'disconnect')])
    }
    peer.dialler = undefined
    // Only a socket that just sent a PART stays open for it.
    dialler.stop(parting)
    if (wasLive) this.table.lost(link, how === 'auth' ? 'AUTH' : 'DISCONNECT')
    this.releaseIfIdle()
    // The key was admitted because we dialled it: an inbound link of it may not be allowed any more.
    if (this.identity !== undefined) for (const l of [...this.acceptor.links()]) if (l.peer === name) this.recheck(l)
    this.table.forgetIfUnused(peer)
  }

  /** Names of the active peers. */
  activeNames(): string[] {
    const names: string[] = []
    for (const peer of this.table.values()) if (peer.live !== undefined) names.push(peer.name)
    return names
  }

  /** Each active peer and which side dialled the link that serves it. */
  links(): { peer: string; direction: 'outbound' | 'inbound' }[] {
    const out: { peer: string; direction: 'outbound' | 'inbound' }[] = []
    for (const peer of this.table.values()) if (peer.live !== undefined) out.push({ peer: peer.name, direction: peer.live.direction })
    return out
  }

  /** Every peer known (up, dialled, or being dialled; a dial by address alone under its address until named) and where it stands; clock ms. */
  snapshot(): PeerSnapshot[] {
    const out: PeerSnapshot[] = []
    for (const peer of this.table.values()) {
      const { live, dialler } = peer
      if (live !== undefined) {
        out.push({ name: peer.name, state: 'up', direction: live.direction, address: dialler?.address, since: live.opened, rtt: live.rtt })
      } else if (dialler !== undefined && dialler.state !== 'stopped') out.push(dialling(peer.name, dialler))
    }
    for (const { dialler } of this.unnamed.values()) out.push(dialling(dialler.address, dialler))
    return out
  }

  /** The live link to `name`, if any. */
  linkTo(name: string): Link | undefined {
    return this.table.get(name)?.live
  }

  /**
   * Part every link, stop every dialler, close the sockets. A `down`
   * listener that throws does not stop the close: every peer is still
   * parted and every socket closed, and then close() rejects with the first
   * error thrown.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // Its sockets close below or within linger; the context, shared with other nodes anyway, may take a new node now.
    this.settings.context.release()
    this.liveness.stop()
    this.release?.()
    this.release = undefined
    const part = encodePart(Part.CLOSE, 'closing')
    let thrown: { error: unknown } | undefined
    for (const peer of [...this.table.values()]) {
      const link = peer.live
      if (link !== undefined) {
        void link.send([part])
        peer.live = undefined
        try {
          this.events.down(peer.name, 'CLOSED', link)
        } catch (error) {
          thrown ??= { error }
        }
      }
      // Only a socket that just sent a PART stays open for it.
      peer.dialler?.stop(link !== undefined && link === peer.dialler.link)
    }
    for (const { dialler } of this.unnamed.values()) dialler.stop(false)
    this.unnamed.clear()
    // Each dialling socket closes once its last dial (a PART given its linger) has.
    this.dials.close()
    this.table.clear()
    // The accepted links were sent a PART: their peers hang up once they read it, and the ROUTER waits for that (within
    // linger), or for a PART of theirs (closing too, they will not).
    await this.router.close(this.acceptor.close(), isPart)
    if (thrown !== undefined) throw thrown.error
  }

  stats(): MeshStats {
    const c = this.acceptor.counts()
    return {
      peers: this.table.size + this.unnamed.size,
      inbound: c.inbound,
      connections: c.connections,
      unjoined: c.unjoined,
      ignored: c.ignored,
      dropped: this.acceptor.dropped + this.dialDropped,
      refusedConnections: this.admission.refused,
    }
  }

  // --- links ---------------------------------------------------------------

  /** Encrypted nodes: cut `link` if its key is no longer allowed (PART AUTH on it; down AUTH). */
  private recheck(link: Link): boolean {
    if (this.identity === undefined || link.state === 'closed' || this.identity.allows(link.peer)) return false
    void link.send([encodePart(Part.AUTH, REVOKED)])
    if (link.direction === 'inbound') {
      this.acceptor.drop(link)
      this.table.lost(link, 'AUTH')
    } else {
      this.table.lost(link, 'AUTH')
      this.table.get(link.peer)?.dialler?.resume()
    }
    return true
  }

  /** What JOIN and STAY announce as callTimeout: the deadline our CALLs without one carry (they are sent with their remaining time otherwise). */
  get announcedCallTimeout(): number {
    return Math.ceil(this.options.callTimeout)
  }

  /** What JOIN and STAY announce as maxPart: our maxMessageSize, as far as the field's 32 bits go. */
  private get maxPart(): number {
    return Math.min(this.options.maxMessageSize, MAX_UINT32)
  }

  private makeLink(
    peer: string,
    direction: 'outbound' | 'inbound',
    hello: Join | Stay,
    write: (parts: Uint8Array[]) => Promise<Delivery>,
    address?: string,
  ): Link {
    const link = new Link(peer, direction, hello, write, this.linkOptions, this.clock.now(), address)
    if (link.tickEvery !== undefined) this.liveness.tickAtLeastEvery(link.tickEvery)
    // Pack only for a peer that announced it reads packed parts, and never beyond what either side accepts.
    link.packUpTo(Math.min(hello.maxPart ?? 0, this.options.maxMessageSize))
    return link
  }

  private failed = (error: unknown): void => {
    this.events.dropped(new BilateralError('INTERNAL', `failed while handling a message: ${String(error)}`, { cause: error }))
  }

  // --- hosts of the sub-machines -----------------------------------------

  private makeDialHost(): DialHost {
    return {
      clock: this.clock,
      timing: this.options,
      pace: new JoinPace(this.options),
      open: (address: string, peer: string, events: DialEvents): DialPort => {
        try {
          return this.dials.open(address, this.identity === undefined ? undefined : peer, events)
        } catch (error) {
          if (!(error instanceof NoRoom)) throw error
          throw new BilateralError('SOCKET', `cannot dial ${address}: too few file descriptors left (${this.fds.describe()})`, { peer })
        }
      },
      join: (peer: string | undefined, challenge: Uint8Array | undefined): Uint8Array | undefined =>
        this.identity?.pending() !== undefined
          ? undefined
          : encodeJoin({
              network: this.options.network,
              name: this.options.name,
              // An encrypted node dials by key only, so its peer is named.
              proof: peer === undefined ? undefined : this.identity?.proof(peer, challenge),
              target: peer,
              maxPart: this.maxPart,
              incarnation: this.limits.incarnation,
              window: this.limits.window,
              callTimeout: this.announcedCallTimeout,
            }),
      checkStay: (peer: string | undefined, address: string, stay: Stay): { code: ErrorCode; message: string } | undefined => {
        if (peer !== undefined && stay.name !== peer)
          return { code: 'WRONG_NAME', message: `expected ${peer} at ${address}, found ${JSON.stringify(clip(stay.name, 64))}` }
        if (stay.network !== this.options.network)
          return { code: 'NETWORK_MISMATCH', message: `network ${JSON.stringify(clip(stay.network, 64))} is not ours` }
        return peer === undefined ? this.checkUnnamedStay(address, stay.name) : undefined
      },
      named: (dialler) => this.nameDial(dialler),
      makeLink: (peer, address, stay, write) => this.makeLink(peer, 'outbound', stay, write, address),
      up: (_dialler, link) => this.table.up(link),
      lost: (link, reason) => this.table.lost(link, reason),
      served: (peer) => {
        const live = this.table.get(peer)?.live
        return live !== undefined && live.direction === 'inbound'
      },
      refused: (peer, error) => {
        this.unnamed.get(peer)?.watch.refused(error)
        this.events.refused(peer, error, true)
      },
      attempt: (peer, address) => this.events.dialling(peer, address),
      backoff: (peer, ms) => this.events.backingOff(peer, ms),
      data: (link, frame) => this.events.data(link, frame),
      dropped: (peer: string, error: CodecError) => {
        this.dialDropped++
        this.events.dropped(new BilateralError('PROTOCOL', `dropped a message: ${error.message}`, { peer, cause: error }))
      },
      consumed: (link, bytes) => link.consumed(bytes),
      failed: this.failed,
    }
  }

  private acceptHost(): AcceptHost {
    return {
      clock: this.clock,
      timing: this.options,
      network: this.options.network,
      name: this.options.name,
      maxPeers: this.options.maxPeers,
      maxMessage: this.options.maxMessageSize + 2 * MAX_BYTES,
      maxMessageSize: this.options.maxMessageSize,
      verifier: this.identity?.verifier,
      admission: this.admission,
      send: (id, parts) => this.router.deliver(id, parts),
      stay: () =>
        encodeStay({
          network: this.options.network,
          name: this.options.name,
          maxPart: this.maxPart,
          incarnation: this.limits.incarnation,
          window: this.limits.window,
          callTimeout: this.announcedCallTimeout,
          stallTimeout: Math.min(Math.ceil(this.options.stallTimeout), MAX_UINT32),
        }),
      makeLink: (join, write) => this.makeLink(join.name, 'inbound', join, write),
      peerCount: () => this.table.activeCount(),
      isPeer: (name) => this.table.get(name)?.live !== undefined,
      servedByDial: (name) => this.table.get(name)?.live?.direction === 'outbound',
      dialState: (name) => this.table.get(name)?.dialler?.state,
      up: (link) => this.table.up(link),
      lost: (link, reason) => this.table.lost(link, reason),
      crossed: (link) => {
        // A17: it no longer serves the peer; it stays open a moment for stragglers.
        this.acceptor.crossedLink(link)
        this.table.crossed(link)
      },
      data: (link, frame) => this.events.data(link, frame),
      consumed: (link, bytes) => link.consumed(bytes),
      refused: (name, error) => this.events.refused(name, error, false),
      dropped: (error) => this.events.dropped(error),
      revoked: (link) => this.recheck(link),
      failed: this.failed,
    }
  }

  private livenessHost(): LivenessHost {
    const mesh = this
    return {
      clock: this.clock,
      live: () => this.table.liveLinks(),
      *links() {
        yield* mesh.acceptor.links()
        for (const p of mesh.table.values()) {
          const l = p.dialler?.link
          if (l !== undefined && l.state !== 'closed') yield l
        }
      },
      tick: (link) => void link.send([TICK]),
      stalled: (link) => {
        if (link.direction === 'inbound') this.acceptor.drop(link)
        this.table.lost(link, 'TIMEOUT')
        if (link.direction === 'outbound') this.table.get(link.peer)?.dialler?.resume()
      },
      recheck: (link) => void this.recheck(link),
      expire: (now) => this.acceptor.expire(now),
      forgive: (late, now) => {
        for (const link of this.table.liveLinks()) link.lastHeard = Math.min(now, link.lastHeard + late)
        this.acceptor.forgive(late)
      },
    }
  }
}
