/**
 * Membership: a node that reaches one seed learns every other member and
 * connects to it, so nodes started with one seed each form a full mesh.
 *
 * Each member keeps a table of records (records.ts). Every
 * `gossipInterval` (with jitter) it asks up to {@link FANOUT} random peers,
 * through the reserved receiver `$mesh`, whether their table is the same as
 * its own (one hash each way); only when it is not do they swap digests and
 * then the records each lacks. At rest that is two small calls a node a
 * round, whatever the size of the mesh; a change spreads in a number of
 * rounds that grows like log N.
 *
 * From the table it connects: to a member it has no link to, if that member
 * listens and either we do not or our name sorts first (so two members do
 * not both dial), or if the member has not come up after three rounds. A
 * member that leaves says so (`$mesh.Leave`) before it parts, and the left
 * record spreads; one whose link goes down without that is suspect, and
 * gone once it has not come back within `suspectTimeout`, when our dial to it
 * stops and its record is marked dead for the others. A member marked dead
 * while alive answers with a later version, and is taken back. A later run
 * of a member (a higher incarnation) replaces its record. Changes are passed
 * on at once as well as at the rounds, and records cannot make a node dial
 * without bounds (see connectAndExpire).
 *
 * It sees the node through {@link MemberHost} only; the mesh knows nothing
 * of it.
 */
import { BilateralError } from '../errors.js'
import {
  MAX_MEMBERS,
  MAX_RECORDS_PER_EXCHANGE,
  MAX_VERSION,
  MAX_ADDRESSES,
  MAX_OFFERS,
  tooLate,
  ALIVE,
  DEAD,
  LEFT,
  checkDigest,
  checkRecords,
  digestOf,
  fromDigest,
  hashOf,
  newer,
  type DigestEntry,
  type MemberRecord,
} from './records.js'
import type { Parting } from '../mesh/mesh.js'
import { compareUtf8 } from '../utf8-order.js'
import { Seeds, type Resolver, type SeedHost } from './seeds.js'

/** Most `$mesh` Sync and Exchange calls taken from one peer a second, with the default gossipInterval (see callsPerSecond). */
export const MAX_CALLS_PER_SECOND = 64
/** Peers asked each round. */
export const FANOUT = 2
/** How long a gone or left member's record is kept, so gossip does not bring it back, ms. */
export const TOMBSTONE_MS = 60_000
/**
 * Most dials of ours in flight: dialled within the last round and not up
 * yet. A dial that comes up frees its place at once, so a member with many
 * to dial goes on without waiting for the next round; a dial still not up
 * after a round stops holding a place, so addresses that never answer cannot
 * hold up the rest.
 */
const MAX_DIALS_IN_FLIGHT = 16
/** Most new dials between two rounds (records cannot make a node dial faster than this). */
const MAX_DIALS_PER_ROUND = 64
/** Least time between two passes over the table that a dial coming up starts, ms. */
const REFILL_SPACING = 10
/**
 * Rounds a member waits for the other of a pair, whose turn it is, to dial
 * before it dials itself (the other may not reach our address). Not two:
 * while a mesh forms, the other often has not yet heard of us by then, and
 * hearing of us later dials too, so the pair dials both ways; in three
 * interleaved pairs of runs each, 100 members formed in 2.5-2.9 s against
 * 2.7-3.6 s in 2 processes, and in 3.6-4.6 s against 4.4-5.4 s in 5.
 */
const DIAL_FALLBACK_ROUNDS = 3
/** Rounds a member lost is not dialled again, even if a newer record of it comes. */
const HOLD_DOWN_ROUNDS = 5
/** How many periods of suspectTimeout a member never reached is dialled before it is gone. */
const CONNECT_PERIODS = 5
/** Least time between two spreads of news outside the rounds, ms. */
const EAGER_SPACING = 50
/**
 * The part of a round a changed table must then stay still before it is
 * compared once more, not only at the next round. News reaches a member
 * only over its links, and the member that sorts first dials nearly every
 * other, so while news flows it has few links up; what it missed waited for
 * its next round. 50 members in 3 processes took over 0.8 s to converge in
 * 16 of 50 rounds (median 0.63 s, slowest 1.19), and in 1 of 50 with this
 * (0.62 s, 0.91): two Sync calls a member each time its table settles, none
 * at rest.
 */
const SETTLE_PART = 1 / 4
/** Longest close() waits for the news that we leave to be handed over, ms. */
const LEAVE_WAIT = 250

/** What membership needs of its node. */
export interface MemberHost extends SeedHost {
  readonly name: string
  /** Where the node listens now. */
  addresses(): string[]
  connect(name: string, address: string): void
  /** Stop dialling `name`, telling it as `how` says. */
  disconnect(name: string, how?: Parting): Promise<void>
  upNames(): string[]
  request(peer: string, method: string, args: unknown, options: { timeout: number }): Promise<unknown>
  cast(to: string[], method: string, args: unknown): Promise<string[]>
  /** The receivers the node announces now. */
  offers(): string[]
  /** A member joined the table (or came back), its record changed, or it left (or is gone). */
  event(kind: MemberEvent, member: MemberInfo): void
}

/** What changed of a member: `join` (new to the table, or back), `update` (a newer record: addresses, roles, offers, a restart), `leave` (left, gone, or forgotten). */
export type MemberEvent = 'join' | 'update' | 'leave'

/** Which members a call is addressed to: those with the role, those that announce the receiver; both, if both are given. */
export interface MemberSelector {
  role?: string
  offers?: string
}

export interface MembershipOptions {
  readonly seeds: readonly string[]
  readonly resolver: Resolver
  /** The addresses to announce instead of the ones the node listens on. */
  readonly advertise: readonly string[] | undefined
  readonly roles: readonly string[]
  readonly gossipInterval: number
  /** How long a member may be down (or not come up) before it is gone, ms. */
  readonly suspectTimeout: number
}

/** `self`: this node. `known`: in the table, no link yet. `connecting`: we dial it. `up`: linked. `suspect`: its link went down. `gone`: not back in time (or marked dead by another). `left`: it said it left. */
export type MemberState = 'self' | 'known' | 'connecting' | 'up' | 'suspect' | 'gone' | 'left'

/** A member as members() shows it. */
export interface MemberInfo {
  name: string
  state: MemberState
  /** Why it is suspect, gone or left. */
  why?: string
  addresses: string[]
  roles: string[]
  /** The receivers it announces. */
  offers: string[]
  incarnation: number
  /** When it entered its state, ms since the epoch. */
  since: number
}

interface Entry {
  record: MemberRecord
  state: MemberState
  /** When it entered its state (clock ms). */
  since: number
  why: string | undefined
  /** Periods of `suspectTimeout` spent connecting to it without its coming up (or failed attempts to connect). */
  waited: number
  /** When we last lost it (clock ms): it is not dialled again for HOLD_DOWN_ROUNDS rounds after. */
  lostAt: number
  /** When we last dialled it (clock ms): a dial holds a place in flight for a round at most. */
  dialledAt: number
}

/** What membership counts, as stats().members shows it. */
export interface MembershipCounts {
  /** Rounds run, and exchanges that found two tables different. */
  rounds: number
  exchanges: number
  /** Records for new names dropped (the table was full), skipped (an incarnation far ahead of our clock), refused (a key authorizedKeys refuses). */
  recordsDropped: number
  recordsSkipped: number
  recordsRefused: number
  /** Members forgotten to make room in a full table. */
  evicted: number
  /** `$mesh` calls answered OVERLOADED for coming too fast. */
  throttled: number
  /** Members whose connect() could not even be attempted (no socket to be had, an address refused). */
  connectFailures: number
}

/** What `$mesh` answers. */
export interface MeshReceiver {
  Sync(args: unknown, ctx: { from: string }): { same: true } | { digest: DigestEntry[] }
  Exchange(args: unknown, ctx: { from: string }): { records: MemberRecord[] }
  Leave(args: unknown, ctx: { from: string }): void
}

export class Membership {
  private readonly entries = new Map<string, Entry>()
  private self: MemberRecord
  private hash: string | undefined
  /** Changes to the table so far. */
  private changes = 0
  private timer: unknown
  private stopped = false
  /** The pending spread of news, and when the last one ran (clock ms). */
  private eager: unknown
  private lastEager = -Infinity
  /** The pending comparison once the table has settled (SETTLE_PART). */
  private settle: unknown
  /** The pending pass that refills dials freed by links coming up, and the new dials since the last round. */
  private refill: unknown
  private roundDials = 0

  /** Whether leave() has begun. */
  get leaving(): boolean {
    return this.stopped
  }
  /** Peers that answered `$mesh` with NO_SUCH_METHOD: plain peers, not asked again. */
  private readonly plain = new Set<string>()
  private readonly seeds: Seeds
  /** What membership has counted (stats().members). */
  readonly counts: MembershipCounts = {
    rounds: 0,
    exchanges: 0,
    recordsDropped: 0,
    recordsSkipped: 0,
    recordsRefused: 0,
    evicted: 0,
    throttled: 0,
    connectFailures: 0,
  }
  /** Why the last connect() to a member could not even be attempted. */
  private lastFailure: string | undefined

  constructor(
    private readonly host: MemberHost,
    private readonly options: MembershipOptions,
  ) {
    this.self = {
      name: host.name,
      addresses: this.ownAddresses(),
      roles: [...options.roles],
      offers: host.offers().slice(0, MAX_OFFERS),
      incarnation: Date.now(),
      version: 0,
      status: ALIVE,
    }
    this.seeds = new Seeds(host, options.seeds, options.resolver, options.gossipInterval)
  }

  start(): void {
    this.schedule(0)
  }

  /** What it has counted, with the members in its table and the seed attempts that failed before dialling. */
  stats(): MembershipCounts & { members: number; seedFailures: number } {
    return { members: this.entries.size, ...this.counts, seedFailures: this.seeds.failures }
  }

  /** More seeds, tried from the next round. */
  addSeeds(seeds: readonly string[]): void {
    this.seeds.add(seeds)
  }

  /** Say we leave to every peer that runs membership, then stop. */
  async leave(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.seeds.stop()
    this.host.clock.clearTimer(this.timer)
    if (this.eager !== undefined) this.host.clock.clearTimer(this.eager)
    if (this.settle !== undefined) this.host.clock.clearTimer(this.settle)
    if (this.refill !== undefined) this.host.clock.clearTimer(this.refill)
    const to = this.host.upNames().filter((name) => !this.plain.has(name))
    if (to.length === 0) return
    // Handed over (or not) within a bound: a member that is not reading does not hold up our close().
    let timer: unknown
    const bound = new Promise<void>((resolve) => (timer = this.host.clock.setTimer(resolve, LEAVE_WAIT)))
    await Promise.race([this.host.cast(to, '$mesh.Leave', { incarnation: this.self.incarnation }).catch(() => []), bound])
    this.host.clock.clearTimer(timer)
  }

  /** The table now, ourselves first. */
  members(): MemberInfo[] {
    const out = [this.show(this.self, 'self', this.host.clock.now(), undefined)]
    for (const e of this.entries.values()) out.push(this.show(e.record, e.state, e.since, e.why))
    return out
  }

  private show(record: MemberRecord, state: MemberState, since: number, why: string | undefined): MemberInfo {
    const info: MemberInfo = {
      name: record.name,
      state,
      addresses: [...record.addresses],
      roles: [...record.roles],
      offers: [...record.offers],
      incarnation: record.incarnation,
      since: Math.round(since + this.offsetFromClock()),
    }
    if (why !== undefined) info.why = why
    return info
  }

  /**
   * The members `selector` addresses, now: every one with the role and
   * announcing the receiver it names that is not gone or left; `up`: only
   * those linked to us. Ourselves never.
   */
  select(selector: MemberSelector, up = false): string[] {
    const out: string[] = []
    for (const [name, e] of this.entries) {
      if (e.state === 'gone' || e.state === 'left' || (up && e.state !== 'up')) continue
      if (selector.role !== undefined && !e.record.roles.includes(selector.role)) continue
      if (selector.offers !== undefined && !e.record.offers.includes(selector.offers)) continue
      out.push(name)
    }
    return out
  }

  /** The receivers the node announces changed: the record says so at once (and the next round spreads it). */
  refresh(): void {
    if (!this.stopped) this.refreshSelf()
  }

  /** The `$mesh` receiver. */
  receiver(): MeshReceiver {
    return {
      Sync: (args, ctx) => {
        this.admit(ctx.from)
        const hash = (args as { hash?: unknown } | null)?.hash
        return hash === this.tableHash() ? { same: true } : { digest: this.digest() }
      },
      Exchange: (args, ctx) => {
        this.admit(ctx.from)
        const { records, want } = (args ?? {}) as { records?: unknown; want?: unknown }
        // Everything checked before anything is kept.
        if (!Array.isArray(want) || want.length > MAX_RECORDS_PER_EXCHANGE || !want.every((n) => typeof n === 'string')) {
          throw new BilateralError('INVALID_ARGUMENT', `want must be an array of at most ${MAX_RECORDS_PER_EXCHANGE} names`)
        }
        this.merge(checkRecords(records))
        return { records: want.map((name) => this.recordOf(name)).filter((r): r is MemberRecord => r !== undefined) }
      },
      Leave: (args, ctx) => {
        const incarnation = (args as { incarnation?: unknown } | null)?.incarnation
        const e = this.entries.get(ctx.from)
        // Said again (or by a member we hold as left already): nothing is news.
        if (e === undefined || e.record.incarnation !== incarnation || e.record.status === LEFT) return
        this.setRecord(e, { ...e.record, status: LEFT })
        this.enter(e, 'left', 'it said it left')
        void this.stopDialling(ctx.from, 'quiet')
        this.news()
      },
    }
  }

  /** `$mesh` calls from each peer in the current second: when the second began (clock ms), and how many. */
  private readonly asked = new Map<string, { since: number; calls: number }>()

  /**
   * A few `Sync` and `Exchange` calls a second from one peer: what an
   * honest member can make (two a spread, a spread each round and each
   * time news comes, at most every EAGER_SPACING ms; a settling spread
   * follows a quarter of a round without news, in which news could have
   * made four or more, so it adds none to that bound), with room to spare,
   * and at least {@link MAX_CALLS_PER_SECOND}. Beyond, OVERLOADED, so a peer
   * flooding them costs us a map lookup each, not a digest or a merge.
   */
  private admit(peer: string): void {
    const now = this.host.clock.now()
    let w = this.asked.get(peer)
    if (w === undefined || now - w.since >= 1000) this.asked.set(peer, (w = { since: now, calls: 0 }))
    if (++w.calls <= this.callsPerSecond) return
    this.counts.throttled++
    throw new BilateralError('OVERLOADED', `more than ${this.callsPerSecond} $mesh calls a second from this peer`)
  }

  /** The rate admit() allows: 2 calls for each spread an honest member can make a second (rounds, then news), plus a margin. */
  private get callsPerSecond(): number {
    const spreads = 1000 / EAGER_SPACING + 1000 / (0.75 * this.options.gossipInterval)
    return Math.max(MAX_CALLS_PER_SECOND, Math.ceil(2 * spreads) + 16)
  }

  /** A link to `name` came up. */
  up(name: string): void {
    const e = this.entries.get(name)
    // A dial of ours came up: its place in flight goes to the next member waiting.
    if (e?.state === 'connecting') this.refillSoon()
    if (e !== undefined && e.state !== 'left') this.enter(e, 'up')
    // A link to a peer not in the table (a seed, a member new to us): ask it at once rather than at the next round.
    // One to a member we knew of came from the table both sides share: the rounds compare them, as with any other.
    if (!this.stopped && !this.plain.has(name) && e === undefined) void this.gossipWith(name)
  }

  /**
   * Our dial to `name`, at the address its record gives, was refused for a reason retrying cannot fix (another
   * node, or another key, answers at its address; another network): it is
   * lost now, not after its periods of trying, and held down like any lost
   * member, so a record cannot make us dial an address that does not answer
   * with its member's key more than once or twice a hold-down.
   */
  refusedForGood(name: string, why: string, address: string | undefined): void {
    const e = this.entries.get(name)
    if (e === undefined || (e.state !== 'connecting' && e.state !== 'known')) return
    // A dial at another address (a seed's, trying each address its name resolves to) says nothing of the member's record.
    if (address !== e.record.addresses[0]) return
    this.lost(e, why)
  }

  /** The link to `name` went down. */
  down(name: string): void {
    const e = this.entries.get(name)
    if (e !== undefined && e.state === 'up') this.enter(e, 'suspect', 'its link went down')
    // A peer that comes back under this name may be a member by then.
    this.plain.delete(name)
    this.asked.delete(name)
  }

  // --- rounds -----------------------------------------------------------------

  /** When the next round is due (clock ms), and how late the last one ran, ms: how busy this process is. */
  private dueAt = 0
  private late = 0

  private schedule(ms: number): void {
    if (this.stopped) return
    this.dueAt = this.host.clock.now() + ms
    this.timer = this.host.clock.setTimer(() => this.round(), ms)
  }

  /**
   * Dials in flight allowed now: {@link MAX_DIALS_IN_FLIGHT}, fewer the later
   * the last round ran, or a settling pass since if that ran later still (a
   * process whose event loop is behind opens no more sockets than it can
   * serve: links time out while it is late, and are dialled again), at least
   * one.
   */
  private inFlightBudget(): number {
    const behind = this.late / this.options.gossipInterval
    return behind < 0.25 ? MAX_DIALS_IN_FLIGHT : Math.max(1, Math.floor(MAX_DIALS_IN_FLIGHT / (1 + 4 * behind)))
  }

  /**
   * Members whose key authorizedKeys no longer admits (a predicate that
   * changed its mind): forgotten, as a record of such a key is never kept,
   * and no longer dialled (the mesh cuts their links within a pingInterval).
   * Asked once a round, not at every pass over the table: the predicate is
   * the application's code.
   */
  private forgetRevoked(): void {
    for (const [name, e] of this.entries) {
      if (this.host.admits(name)) continue
      this.entries.delete(name)
      this.counts.recordsRefused++
      this.changed()
      void this.stopDialling(name, 'auth')
      if (e.state !== 'gone' && e.state !== 'left') {
        e.why = 'its key is no longer authorised here'
        this.tell('leave', e)
      }
    }
  }

  /** Pass over the table soon (at most every REFILL_SPACING ms) to dial in the places freed. */
  private refillSoon(): void {
    if (this.refill !== undefined || this.stopped) return
    this.refill = this.host.clock.setTimer(() => {
      this.refill = undefined
      if (!this.stopped) this.connectAndExpire(this.host.clock.now())
    }, REFILL_SPACING)
  }

  private round(): void {
    if (this.stopped) return
    this.counts.rounds++
    this.roundDials = 0
    const now = this.host.clock.now()
    this.late = Math.max(0, now - this.dueAt)
    // The next round first: an event listener of the application's that throws below does not end the rounds.
    const { gossipInterval } = this.options
    this.schedule(gossipInterval * (0.75 + Math.random() / 2))
    this.refreshSelf()
    this.forgetRevoked()
    this.seeds.due(now)
    this.spread(now)
  }

  /** Compare tables with up to FANOUT random members, and connect to those we should. */
  private spread(now: number): void {
    const candidates = this.host.upNames().filter((name) => !this.plain.has(name))
    for (const name of pick(candidates, FANOUT)) void this.gossipWith(name)
    this.connectAndExpire(now)
  }

  /**
   * The table changed: pass it on now rather than at the next round, at most
   * once every {@link EAGER_SPACING} ms, so news crosses the mesh in network
   * round trips and a table at rest costs nothing more.
   */
  private news(): void {
    if (this.stopped) return
    this.settleLater()
    if (this.eager !== undefined) return
    const wait = Math.max(0, this.lastEager + EAGER_SPACING - this.host.clock.now())
    this.eager = this.host.clock.setTimer(() => {
      this.eager = undefined
      if (this.stopped) return
      this.lastEager = this.host.clock.now()
      this.spread(this.lastEager)
    }, wait)
  }

  /**
   * Compare tables once more when ours has not changed for SETTLE_PART of a
   * round (¾ to 1¼ of it, as rounds, so a mesh that heard the same news
   * does not ask all at once): each change moves it on. Running late, it
   * counts as a late round, so a process behind dials no faster for it; on
   * time, it leaves the lateness to the next round, as it runs when the
   * table is still and the event loop least busy.
   */
  private settleLater(): void {
    if (this.settle !== undefined) this.host.clock.clearTimer(this.settle)
    const wait = this.options.gossipInterval * SETTLE_PART * (0.75 + Math.random() / 2)
    const due = this.host.clock.now() + wait
    this.settle = this.host.clock.setTimer(() => {
      this.settle = undefined
      if (this.stopped) return
      const now = this.host.clock.now()
      this.late = Math.max(this.late, now - due)
      this.spread(now)
    }, wait)
  }

  /** Our own record follows our addresses and the receivers we announce. */
  private refreshSelf(): void {
    const addresses = this.ownAddresses()
    const offers = this.host.offers().slice(0, MAX_OFFERS)
    if (same(addresses, this.self.addresses) && same(offers, this.self.offers)) return
    this.self = { ...this.self, addresses, offers, version: this.self.version + 1 }
    this.changed()
    this.news()
  }

  /** Where we are reached: advertise, else where we listen; the first MAX_ADDRESSES, as a record holds no more. */
  private ownAddresses(): string[] {
    return (this.options.advertise ?? this.host.addresses()).slice(0, MAX_ADDRESSES)
  }

  /** One exchange with `peer`: hashes, then (if they differ) digests, then the records each lacks. */
  private async gossipWith(peer: string): Promise<void> {
    const timeout = Math.max(1000, this.options.gossipInterval)
    try {
      const answer = (await this.host.request(peer, '$mesh.Sync', { hash: this.tableHash() }, { timeout })) as
        { same?: unknown; digest?: unknown } | undefined
      if (answer?.same === true || this.stopped) return
      this.counts.exchanges++
      const theirs = new Map(checkDigest(answer?.digest).map((entry) => [entry[0], fromDigest(entry)]))
      const send: MemberRecord[] = []
      for (const record of this.allRecords()) {
        const known = theirs.get(record.name)
        if (known === undefined || newer(record, known)) send.push(record)
      }
      const want: string[] = []
      for (const [name, record] of theirs) {
        const mine = name === this.self.name ? this.self : this.entries.get(name)?.record
        if (mine === undefined || newer(record, mine)) want.push(name)
      }
      const reply = (await this.host.request(
        peer,
        '$mesh.Exchange',
        { records: send.slice(0, MAX_RECORDS_PER_EXCHANGE), want: want.slice(0, MAX_RECORDS_PER_EXCHANGE) },
        { timeout },
      )) as { records?: unknown } | undefined
      this.merge(checkRecords(reply?.records))
    } catch (error) {
      // A plain peer has no $mesh: it is not asked again. Anything else: the next round tries again.
      if (error instanceof BilateralError && error.code === 'NO_SUCH_METHOD') this.plain.add(peer)
    }
  }

  /** Connect to members we should dial; expire suspects, members that never came up, and old tombstones. */
  private connectAndExpire(now: number): void {
    const { suspectTimeout, gossipInterval } = this.options
    const listening = this.self.addresses.length > 0
    // Addresses we dial or are linked to now, under any name; and our dials in flight (made within the last round).
    const dialled = new Set<string>()
    let inFlight = 0
    for (const e of this.entries.values()) {
      if (e.state === 'connecting' || e.state === 'up') dialled.add(e.record.addresses[0] ?? '')
      if (e.state === 'connecting' && now - e.dialledAt < gossipInterval) inFlight++
    }
    // New dials this pass: the places in flight not held, within the round's bound.
    let dials = 0
    const budget = Math.min(this.inFlightBudget() - inFlight, MAX_DIALS_PER_ROUND - this.roundDials)
    for (const [name, e] of this.entries) {
      switch (e.state) {
        case 'known': {
          if (this.host.isUp(name)) {
            this.enter(e, 'up')
            break
          }
          const address = e.record.addresses[0]
          // The member that sorts first dials, unless only one side listens, or the other has not dialled in time.
          const ours = !listening || compareUtf8(this.self.name, name) < 0 || now - e.since > DIAL_FALLBACK_ROUNDS * gossipInterval
          // Bounds on what records make us dial: a few in flight and a round, one name an address, and none for a while after losing it.
          const allowed = dials < budget && now - e.lostAt >= HOLD_DOWN_ROUNDS * gossipInterval && !dialled.has(address ?? '')
          if (address !== undefined && ours && allowed && !this.host.dialling(name)) {
            dials++
            this.roundDials++
            e.dialledAt = now
            dialled.add(address)
            try {
              this.host.connect(name, address)
              this.enter(e, 'connecting')
            } catch (error) {
              // No socket to be had now (file descriptors), or an address the node refuses: tried again a few rounds, then lost.
              this.counts.connectFailures++
              this.lastFailure = error instanceof Error ? error.message : String(error)
              if (++e.waited >= CONNECT_PERIODS) this.lost(e)
            }
          } else if (address === undefined && now - e.since > suspectTimeout + 2 * gossipInterval) {
            // One we cannot dial (it does not listen) that has not dialled us in that time. One waiting for a dial of ours
            // (the round's dials are spent, or it is held down) waits: it is not lost for our own pacing.
            this.lost(e)
          }
          break
        }
        case 'connecting':
          // A member never reached yet may only be slow to answer (a mesh forming on a busy host): the dial goes on, for a while.
          if (this.host.isUp(name)) this.enter(e, 'up')
          else if (now - e.since > suspectTimeout && ++e.waited < CONNECT_PERIODS) e.since = now
          else if (now - e.since > suspectTimeout) this.lost(e)
          break
        case 'suspect':
          // One that was up and went down is given suspectTimeout to come back.
          if (this.host.isUp(name)) this.enter(e, 'up')
          else if (now - e.since > suspectTimeout) this.lost(e)
          break
        case 'up':
          // Its down event is what moves it on; should the state and the link ever disagree, the link wins.
          if (!this.host.isUp(name)) this.enter(e, 'suspect', 'its link went down')
          break
        case 'gone':
        case 'left':
          // Gone, yet linked (it dialled us, or a dial got through): up. Left stays left until a newer record.
          if (e.state === 'gone' && this.host.isUp(name)) this.enter(e, 'up')
          else if (now - e.since > TOMBSTONE_MS) {
            this.entries.delete(name)
            this.changed()
          }
          break
      }
    }
  }

  // --- the table --------------------------------------------------------------

  /** Take in records from a peer: each replaces ours if newer. A record of ourselves newer than ours is answered with a newer one. */
  private merge(records: readonly MemberRecord[]): void {
    const before = this.changes
    this.mergeEach(records)
    if (this.changes !== before) this.news()
  }

  private mergeEach(records: readonly MemberRecord[]): void {
    // Told once an exchange: a member whose record changed several times in one (a flood of one name) is one update.
    const updated = new Set<Entry>()
    let refuted: MemberRecord | undefined
    for (const record of records) {
      // Far ahead of our clock: skipped (a forgery, or a clock far off), the rest of the exchange taken.
      if (tooLate(record)) {
        this.counts.recordsSkipped++
        continue
      }
      // A member we would not admit (a key authorizedKeys refuses): not kept, not passed on, never dialled.
      if (record.name !== this.self.name && !this.host.admits(record.name)) {
        this.counts.recordsRefused++
        continue
      }
      if (record.name === this.self.name) {
        // Said to be dead or gone, or a later version than ours: we are alive, and say so with a version past it (not while leaving).
        if (!this.stopped && (newer(record, this.self) || record.status !== ALIVE)) {
          if (refuted === undefined || newer(record, refuted)) refuted = record
        }
        continue
      }
      const e = this.entries.get(record.name)
      if (e === undefined) {
        // News of the death or departure of a member we never knew (or forgot) is of no use: not taken, so tombstones end.
        if (record.status !== ALIVE) continue
        if (this.entries.size >= MAX_MEMBERS && !this.evictOne()) {
          this.counts.recordsDropped++
          continue
        }
        const state: MemberState = this.host.isUp(record.name) ? 'up' : 'known'
        const entry: Entry = {
          record,
          state,
          since: this.host.clock.now(),
          why: undefined,
          waited: 0,
          lostAt: -Infinity,
          dialledAt: -Infinity,
        }
        this.entries.set(record.name, entry)
        this.changed()
        this.tell('join', entry)
        continue
      }
      if (!newer(record, e.record)) continue
      // A new run of it is not held back by our having lost the last one.
      if (record.incarnation > e.record.incarnation) e.lostAt = -Infinity
      const was = e.record
      const away = e.state === 'gone' || e.state === 'left'
      this.setRecord(e, record)
      if (record.status === LEFT) {
        this.enter(e, 'left', 'it said it left')
        void this.stopDialling(record.name, 'quiet')
      } else if (record.status === DEAD) {
        // Lost by another member. Linked to it, dialling it, or waiting for its link to come back, we keep at it: our own
        // link or dial decides, and the member, if alive, hears of that record and answers it. Only a member we are doing
        // nothing about is taken as gone: one member's loss under load must not make every other give up its dial.
        if (e.state === 'known' && !this.host.isUp(record.name)) {
          this.enter(e, 'gone', 'another member lost it')
          void this.stopDialling(record.name)
        }
      } else if (away) this.enter(e, this.host.isUp(record.name) ? 'up' : 'known')
      else if (!sameContent(was, record)) updated.add(e)
    }
    // One answer to the newest claim about us, however many came.
    if (refuted !== undefined) this.refute(refuted)
    for (const e of updated) if (e.state !== 'gone' && e.state !== 'left' && this.entries.get(e.record.name) === e) this.tell('update', e)
  }

  /** Someone holds a record of us newer than ours, or one saying we left: ours goes past it. */
  private refute(record: MemberRecord): void {
    let incarnation = Math.max(record.incarnation, this.self.incarnation)
    let version = incarnation === record.incarnation ? Math.max(record.version, this.self.version) + 1 : this.self.version + 1
    // Versions are bounded: past the last one, a new incarnation (others take it once it is within their MAX_SKEW).
    if (version > MAX_VERSION) {
      incarnation++
      version = 0
    }
    this.self = { ...this.self, incarnation, version, status: ALIVE }
    this.changed()
  }

  /**
   * The table is full and a new member came: make room by forgetting the
   * oldest tombstone (gone or left), else the oldest member never linked to
   * us (so a flood of made-up records cannot keep real members out). False
   * if every member is linked to us.
   */
  private evictOne(): boolean {
    let victim: [string, Entry] | undefined
    const rank = (e: Entry): number =>
      e.state === 'gone' || e.state === 'left' ? 0 : e.state === 'known' || e.state === 'connecting' ? 1 : 2
    for (const pair of this.entries) {
      const r = rank(pair[1])
      if (r === 2) continue
      if (victim === undefined || r < rank(victim[1]) || (r === rank(victim[1]) && pair[1].since < victim[1].since)) victim = pair
    }
    if (victim === undefined) return false
    this.entries.delete(victim[0])
    if (victim[1].state === 'connecting') void this.stopDialling(victim[0])
    if (rank(victim[1]) === 1) {
      victim[1].why = 'forgotten to make room in a full table'
      this.tell('leave', victim[1])
    }
    this.counts.evicted++
    this.changed()
    return true
  }

  /** We lost `e` for good: gone here, no longer dialled, and marked dead for the others (it answers that if it is alive after all). */
  private lost(e: Entry, refusal?: string): void {
    const why =
      refusal !== undefined
        ? refusal
        : e.state === 'suspect'
          ? `not back within ${this.options.suspectTimeout} ms`
          : e.state === 'connecting'
            ? `not reached within ${CONNECT_PERIODS} x ${this.options.suspectTimeout} ms`
            : `not reached (${this.lastFailure ?? 'no link came up in time'})`
    this.enter(e, 'gone', why)
    e.lostAt = this.host.clock.now()
    void this.stopDialling(e.record.name)
    if (e.record.status === ALIVE) {
      this.setRecord(e, { ...e.record, status: DEAD })
      this.news()
    }
  }

  /** The table changed: its hash is to be computed again. */
  private changed(): void {
    this.hash = undefined
    this.changes++
  }

  private setRecord(e: Entry, record: MemberRecord): void {
    e.record = record
    this.changed()
  }

  /** Move `e` to `state`; into gone or left is a leave, and out of them a join (each told once). */
  private enter(e: Entry, state: MemberState, why?: string): void {
    if (e.state === state) return
    const away = e.state === 'gone' || e.state === 'left'
    e.state = state
    e.since = this.host.clock.now()
    e.waited = 0
    e.why = why
    const gone = state === 'gone' || state === 'left'
    if (gone && !away) this.tell('leave', e)
    else if (!gone && away) this.tell('join', e)
  }

  private tell(kind: MemberEvent, e: Entry): void {
    this.host.event(kind, this.show(e.record, e.state, e.since, e.why))
  }

  private async stopDialling(name: string, how: Parting = 'part'): Promise<void> {
    if (this.host.dialling(name)) await this.host.disconnect(name, how).catch(() => {})
  }

  private recordOf(name: string): MemberRecord | undefined {
    return name === this.self.name ? this.self : this.entries.get(name)?.record
  }

  private *allRecords(): Iterable<MemberRecord> {
    yield this.self
    for (const e of this.entries.values()) yield e.record
  }

  private digest(): DigestEntry[] {
    return [...this.allRecords()].map(digestOf)
  }

  /** The hash of our table (records.ts hashOf), kept until the table changes. */
  private tableHash(): string {
    return (this.hash ??= hashOf(this.digest()))
  }

  private offsetFromClock(): number {
    return Date.now() - this.host.clock.now()
  }
}

const same = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i])

/** Do two records of a member say the same of it (the run, where it listens, its roles and offers)? */
const sameContent = (a: MemberRecord, b: MemberRecord): boolean =>
  a.incarnation === b.incarnation && same(a.addresses, b.addresses) && same(a.roles, b.roles) && same(a.offers, b.offers)

/** Up to `n` of `items`, chosen at random. */
function pick<T>(items: readonly T[], n: number): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy.slice(0, n)
}
