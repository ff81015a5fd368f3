/**
 * The peer table (PROTOCOL.md 12): for each peer, the dialler we keep for
 * it (if we dial it) and the one live link that serves it. Its rules decide
 * which link serves a peer when both sides dial each other, and both sides
 * apply them to the same events, so they agree without random back-off:
 *
 * - the first link to become live stays (a JOIN never replaces one: A8, A9);
 * - an inbound link coming up puts our dialler to the peer in standby if the
 *   peer sorts first (D25);
 * - when both links are up at once, the one dialled by the node whose name
 *   sorts first survives, and the other is parted with CROSS and retired
 *   (D4, A20);
 * - a standby dialler takes over when the inbound link that served the peer
 *   goes (D24).
 *
 * It sees the rest of the mesh through {@link PeerTableHost} only, and a
 * dialler through {@link DialControl}.
 */
import type { DialState } from './dial.js'
import type { Link } from './link.js'
import { compareUtf8 } from '../utf8-order.js'

/** What the table asks of a dialler. */
export interface DialControl {
  readonly state: DialState
  /** Another link serves the peer: stop joining (D2, D7, D25). */
  standby(): void
  /** Open a new socket after the back-off (D24). */
  resume(): void
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
  /** A key was refused: the peer no longer admits ours, or we no longer admit its (`authorizedKeys` changed, or we disconnected from it). */
  | 'AUTH'
  /** Its connection was found closed when it came back under the same name. */
  | 'LOST'
  /** It broke the protocol (a message beyond every limit): its connection is ignored from now on. */
  | 'PROTOCOL'
  /** We called `disconnect()`. */
  | 'DISCONNECT'
  /** We called `close()`. */
  | 'CLOSED'

export interface PeerTableHost {
  /** Our own name: the cross-dial rule compares it with the peer's, bytewise. */
  readonly name: string
  /** Is the node closing (no dialler is resumed then)? */
  readonly closing: boolean
  /** `peer` is up over `link`. */
  up(peer: string, link: Link): void
  /** `peer` is down; `link` served it. */
  down(peer: string, reason: DownReason, link: Link): void
  /** Our dial won over `inbound` (A20): part it with CROSS and retire it. */
  retireInbound(inbound: Link): void
  /** Our dial lost to the peer's (D4): part it with CROSS; its dialler stands by. */
  withdraw(outbound: Link): void
  /** Does the accepting side still hold a link of `name` (joined, not live here)? */
  holdsInbound(name: string): boolean
}

export interface Peer<D extends DialControl> {
  readonly name: string
  dialler: D | undefined
  /** The live link, if the peer is active. */
  live: Link | undefined
}

export class PeerTable<D extends DialControl> {
  private readonly peers = new Map<string, Peer<D>>()

  constructor(private readonly host: PeerTableHost) {}

  get size(): number {
    return this.peers.size
  }

  get(name: string): Peer<D> | undefined {
    return this.peers.get(name)
  }

  /** The entry of `name`, made if there is none. */
  entry(name: string): Peer<D> {
    let peer = this.peers.get(name)
    if (peer === undefined) {
      peer = { name, dialler: undefined, live: undefined }
      this.peers.set(name, peer)
    }
    return peer
  }

  values(): IterableIterator<Peer<D>> {
    return this.peers.values()
  }

  /** The live link of `name`, if it is active. */
  liveLink(name: string): Link | undefined {
    return this.peers.get(name)?.live
  }

  /** Peers with a live link. */
  activeCount(): number {
    let n = 0
    for (const p of this.peers.values()) if (p.live !== undefined) n++
    return n
  }

  *liveLinks(): Iterable<Link> {
    for (const p of this.peers.values()) if (p.live !== undefined) yield p.live
  }

  /** Is anyone dialled? */
  dialling(): boolean {
    for (const p of this.peers.values()) if (p.dialler !== undefined) return true
    return false
  }

  /** `link` has just been accepted (STAY sent or received): it serves its peer, or the rule for two live links parts one. */
  up(link: Link): void {
    const peer = this.entry(link.peer)
    const current = peer.live
    if (current === undefined || current.state === 'closed') {
      peer.live = link
      // D25: an inbound link came up; a dialler that would lose to it stops joining.
      if (link.direction === 'inbound' && peer.dialler !== undefined && !this.weDialFirst(peer.name)) peer.dialler.standby()
      this.host.up(peer.name, link)
      return
    }
    if (current === link) return
    // Both links are up (D4, A20): the one dialled by the node whose name sorts first survives.
    const outbound = link.direction === 'outbound' ? link : current
    const inbound = link.direction === 'inbound' ? link : current
    const keep = this.weDialFirst(peer.name) ? outbound : inbound
    peer.live = keep
    if (keep === outbound) this.host.retireInbound(inbound)
    else {
      this.host.withdraw(outbound)
      peer.dialler?.standby()
    }
  }

  /** `link` is gone for `reason`: the peer is down unless another link serves it; a standby dialler takes over (D24). */
  lost(link: Link, reason: DownReason): void {
    link.close()
    const peer = this.peers.get(link.peer)
    if (peer === undefined || peer.live !== link) return
    peer.live = undefined
    this.host.down(peer.name, reason, link)
    const dialler = peer.dialler
    if (!this.host.closing && dialler !== undefined && link.direction === 'inbound' && dialler.state === 'standby') dialler.resume()
    this.forgetIfUnused(peer)
  }

  /** A17: the peer parted its live inbound `link` with CROSS: it no longer serves (the link stays open a moment, retired). */
  crossed(link: Link): void {
    const peer = this.peers.get(link.peer)
    if (peer?.live !== link) return
    peer.live = undefined
    this.host.down(peer.name, 'PART', link)
    if (!this.host.closing && peer.dialler?.state === 'standby') peer.dialler.resume()
  }

  /** Drop the entry once nothing refers to the peer. */
  forgetIfUnused(peer: Peer<D>): void {
    if (peer.dialler === undefined && peer.live === undefined && !this.host.holdsInbound(peer.name)) this.peers.delete(peer.name)
  }

  /** Forget every peer (close(), once each has been told). */
  clear(): void {
    this.peers.clear()
  }

  /** Does the link we dial win over the one `name` dials? */
  weDialFirst(name: string): boolean {
    return compareUtf8(this.host.name, name) < 0
  }
}
