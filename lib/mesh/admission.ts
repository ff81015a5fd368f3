/**
 * Who may complete a handshake with our ROUTER (PROTOCOL.md 2.3): the ZAP
 * policy of one node. It refuses a key outside `authorizedKeys`, and any
 * connection beyond `maxConnections` in all or `maxConnectionsPerAddress`
 * from one IP address, so a flood of strangers is turned away before it can
 * send a single frame.
 *
 * libzmq does not say which routing id a ZAP request belongs to. The policy
 * learns it by admitting connections from one address at a time: a request
 * from another address waits until every connection admitted so far has
 * appeared on the ROUTER (libzmq's connect notification, microseconds after
 * the admission), so each connection that appears belongs to the address
 * admitted. Requests from the same address need not wait (a burst of a
 * mesh's nodes on one host goes through at once). A connection that never
 * appears (its peer vanished mid-handshake) is given up after
 * {@link ATTRIBUTION_MS}; if it shows up later it is attributed to the
 * oldest such admission, which is the order libzmq completes handshakes in.
 */
import type { Clock } from '../clock.js'
import { ZapStatus, type ZapPolicy, type ZapRequest } from './sockets.js'

/** How long an admission waits for its connection to appear before the next request is decided, ms. */
export const ATTRIBUTION_MS = 1000
/** How long an admission whose connection never appeared still counts, ms. */
const ORPHAN_MS = 10_000
/** Closed connections remembered, to recognise a peer that faked its own disconnect notification. */
const TOMBSTONES = 4096
/** The address of a connection that could not be attributed. */
export const UNKNOWN_ADDRESS = '?'

export interface AdmissionLimits {
  readonly maxConnections: number
  readonly maxConnectionsPerAddress: number
}

export interface AdmissionHost {
  readonly clock: Clock
  /** May this CURVE key (32 bytes) connect? Says why not itself (auth:rejected). */
  admitsKey(key: Uint8Array): boolean
  /** Are there file descriptors to spare for one more connection? */
  roomForConnection(): boolean
  /** A connection was refused for a limit. */
  refusedConnection(address: string, why: string): void
  readonly closed: boolean
}

export class Admission implements ZapPolicy {
  /** Connections per source address: admitted and not yet closed. */
  private readonly perAddress = new Map<string, number>()
  /** Each open connection's source address, by routing id. */
  private readonly addressOf = new Map<string, string>()
  private readonly tombstones = new Map<string, string>()
  /** Admitted connections not yet seen: their address, how many, and who waits for them to appear. */
  private awaiting: { address: string; count: number; drained: (() => void) | undefined; timer: unknown } | undefined
  private orphans: { address: string; at: number }[] = []
  private total = 0
  /** Handshakes refused for a limit (not for a key). */
  refused = 0

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly host: AdmissionHost,
  ) {}

  /** Connections admitted and not yet closed. */
  get connections(): number {
    return this.total
  }

  /** A request from another address than the admissions not yet seen waits for them (or for ATTRIBUTION_MS). */
  before(request: ZapRequest): Promise<void> | undefined {
    const awaiting = this.awaiting
    if (awaiting === undefined || awaiting.address === (request.address || UNKNOWN_ADDRESS)) return undefined
    return new Promise((resolve) => (awaiting.drained = resolve))
  }

  decide(request: ZapRequest): ZapStatus {
    // Closing (its ROUTER stays open a moment for its PARTs): refused for now, not for the dialler's key, which retries.
    if (this.host.closed) return ZapStatus.BUSY
    if (request.mechanism === 'CURVE' && (request.key === undefined || request.key.length !== 32 || !this.host.admitsKey(request.key))) {
      return ZapStatus.REFUSE_KEY
    }
    this.expireOrphans()
    const address = request.address || UNKNOWN_ADDRESS
    if (!this.host.roomForConnection()) return this.refuse(address, 'too few file descriptors are left')
    if (this.total >= this.limits.maxConnections) return this.refuse(address, `${this.total} connections are open (maxConnections)`)
    const here = this.perAddress.get(address) ?? 0
    if (here >= this.limits.maxConnectionsPerAddress) {
      return this.refuse(address, `${here} connections from ${address} are open (maxConnectionsPerAddress)`)
    }
    this.count(address, 1)
    if (this.awaiting === undefined) {
      const awaiting = { address, count: 0, drained: undefined as (() => void) | undefined, timer: undefined as unknown }
      awaiting.timer = this.host.clock.setTimer(() => this.giveUp(awaiting), ATTRIBUTION_MS)
      this.awaiting = awaiting
    }
    this.awaiting.count++
    return ZapStatus.ADMIT
  }

  /** A new connection appeared (routing id `key`): the oldest never seen, else one of those admitted last. */
  appeared(key: string): void {
    let address: string
    const awaiting = this.awaiting
    if (this.orphans.length > 0) {
      address = this.orphans.shift()!.address
    } else if (awaiting !== undefined) {
      address = awaiting.address
      if (--awaiting.count === 0) this.drain(awaiting)
    } else {
      // Not through ZAP as far as we know (it should not happen): counted all the same.
      address = UNKNOWN_ADDRESS
      this.count(address, 1)
    }
    this.tombstones.delete(key)
    this.addressOf.set(key, address)
  }

  /** Admissions whose connections did not appear in time: later appearances go to them first. */
  private giveUp(awaiting: NonNullable<Admission['awaiting']>): void {
    if (this.awaiting !== awaiting) return
    const at = this.host.clock.now()
    for (let i = 0; i < awaiting.count; i++) this.orphans.push({ address: awaiting.address, at })
    this.drain(awaiting)
  }

  private drain(awaiting: NonNullable<Admission['awaiting']>): void {
    this.host.clock.clearTimer(awaiting.timer)
    this.awaiting = undefined
    awaiting.drained?.()
  }

  /** Connection `key` closed. */
  closed(key: string): void {
    const address = this.addressOf.get(key)
    if (address === undefined) return
    this.addressOf.delete(key)
    this.count(address, -1)
    this.tombstones.set(key, address)
    if (this.tombstones.size > TOMBSTONES) this.tombstones.delete(this.tombstones.keys().next().value!)
  }

  /** Did connection `key` close (as far as the last few thousand closed go)? */
  wasClosed(key: string): boolean {
    return this.tombstones.has(key)
  }

  /**
   * Traffic from a routing id with no open connection: a peer that sent the
   * disconnect notification's bytes itself. It is still open: count it again.
   */
  reappeared(key: string): void {
    if (this.addressOf.has(key)) return
    const address = this.tombstones.get(key) ?? UNKNOWN_ADDRESS
    this.tombstones.delete(key)
    this.addressOf.set(key, address)
    this.count(address, 1)
  }

  private refuse(address: string, why: string): ZapStatus {
    this.refused++
    this.host.refusedConnection(address, why)
    return ZapStatus.BUSY
  }

  private count(address: string, delta: number): void {
    this.total += delta
    const n = (this.perAddress.get(address) ?? 0) + delta
    if (n <= 0) this.perAddress.delete(address)
    else this.perAddress.set(address, n)
  }

  /** Admissions whose connection never appeared stop counting after a while. */
  private expireOrphans(): void {
    const old = this.host.clock.now() - ORPHAN_MS
    while (this.orphans.length > 0 && this.orphans[0]!.at < old) this.count(this.orphans.shift()!.address, -1)
  }
}
