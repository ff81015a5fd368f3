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
 * not both dial), or if the member has not come up after two rounds. A
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
import type { Clock } from '../clock.js'
import { BilateralError } from '../errors.js'
import {
  MAX_MEMBERS,
  MAX_RECORDS_PER_EXCHANGE,
  MAX_VERSION,
  MAX_ADDRESSES,
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

/** Peers asked each round. */
export const FANOUT = 2
/** How long a gone or left member's record is kept, so gossip does not bring it back, ms. */
export const TOMBSTONE_MS = 60_000
/** Most new dials a round (records cannot make a node dial faster than this). */
const MAX_DIALS_PER_ROUND = 16
/** Rounds a member lost is not dialled again, even if a newer record of it comes. */
const HOLD_DOWN_ROUNDS = 5
/** How many periods of suspectTimeout a member never reached is dialled before it is gone. */
const CONNECT_PERIODS = 5
/** Least time between two spreads of news outside the rounds, ms. */
const EAGER_SPACING = 50
/** Longest close() waits for the news that we leave to be handed over, ms. */
const LEAVE_WAIT = 250
/** Rounds between checks that a seed reached once is still up. */
const SEED_RECHECK = 10
/** Longest wait between attempts on a seed that does not answer, ms. */
const MAX_SEED_BACKOFF = 30_000

/** What membership needs of its node. */
export interface MemberHost {
  readonly name: string
  readonly clock: Clock
  /** Where the node listens now. */
  addresses(): string[]
  connect(name: string, address: string): void
  disconnect(name: string): Promise<void>
  /** Connect to whoever listens at `address`; its name once up. */
  dial(address: string, options: { timeout: number }): Promise<string>
  /** Do we dial `name`? */
  dialling(name: string): boolean
  isUp(name: string): boolean
  upNames(): string[]
  request(peer: string, method: string, args: unknown, options: { timeout: number }): Promise<unknown>
  cast(to: string[], method: string, args: unknown): Promise<string[]>
}

export interface MembershipOptions {
  readonly seeds: readonly string[]
  /** The addresses to announce instead of the ones the node listens on. */
  readonly advertise: readonly string[] | undefined
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
  addresses: string[]
  incarnation: number
  /** When it entered its state, ms since the epoch. */
  since: number
}

interface Entry {
  record: MemberRecord
  state: MemberState
  /** When it entered its state (clock ms). */
  since: number
  /** Periods of `suspectTimeout` spent connecting to it without its coming up (or failed attempts to connect). */
  waited: number
  /** When we last lost it (clock ms): it is not dialled again for HOLD_DOWN_ROUNDS rounds after. */
  lostAt: number
}

/** What `$mesh` answers. */
export interface MeshReceiver {
  Sync(args: unknown): { same: true } | { digest: DigestEntry[] }
  Exchange(args: unknown): { records: MemberRecord[] }
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

  /** Whether leave() has begun. */
  get leaving(): boolean {
    return this.stopped
  }
  /** Peers that answered `$mesh` with NO_SUCH_METHOD: plain peers, not asked again. */
  private readonly plain = new Set<string>()
  /** Each seed not reached yet: when to try it next (clock ms), and how many tries failed. */
  private readonly seeds = new Map<string, { next: number; failures: number; trying: boolean; name?: string }>()
  /** Records for new names dropped because the table was full. */
  dropped = 0
  /** Records skipped for an incarnation too far ahead of our clock. */
  skipped = 0
  /** Members forgotten to make room for new ones in a full table. */
  evicted = 0
  /** Connections to members that could not even be attempted (no socket to be had), and why the last one could not. */
  failures = 0
  lastFailure: string | undefined
  /** Rounds run, and exchanges that found the tables differ. */
  readonly counts = { rounds: 0, exchanges: 0 }

  constructor(
    private readonly host: MemberHost,
    private readonly options: MembershipOptions,
  ) {
    this.self = { name: host.name, addresses: this.ownAddresses(), incarnation: Date.now(), version: 0, status: ALIVE }
    for (const seed of options.seeds) this.seeds.set(seed, { next: 0, failures: 0, trying: false })
  }

  start(): void {
    this.schedule(0)
  }

  /** Say we leave to every peer that runs membership, then stop. */
  async leave(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.host.clock.clearTimer(this.timer)
    if (this.eager !== undefined) this.host.clock.clearTimer(this.eager)
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
    const show = (record: MemberRecord, state: MemberState, since: number): MemberInfo => ({
      name: record.name,
      state,
      addresses: [...record.addresses],
      incarnation: record.incarnation,
      since: Math.round(since + this.offsetFromClock()),
    })
    const out = [show(this.self, 'self', this.host.clock.now())]
    for (const e of this.entries.values()) out.push(show(e.record, e.state, e.since))
    return out
  }

  /** The `$mesh` receiver. */
  receiver(): MeshReceiver {
    return {
      Sync: (args) => {
        const hash = (args as { hash?: unknown } | null)?.hash
        return hash === this.tableHash() ? { same: true } : { digest: this.digest() }
      },
      Exchange: (args) => {
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
        if (e === undefined || e.record.incarnation !== incarnation) return
        this.setRecord(e, { ...e.record, status: LEFT })
        this.enter(e, 'left')
        void this.stopDialling(ctx.from)
        this.news()
      },
    }
  }

  /** A link to `name` came up. */
  up(name: string): void {
    const e = this.entries.get(name)
    if (e !== undefined && e.state !== 'left') this.enter(e, 'up')
    // A new link: ask it at once rather than at the next round.
    if (!this.stopped && !this.plain.has(name)) void this.gossipWith(name)
  }

  /** The link to `name` went down. */
  down(name: string): void {
    const e = this.entries.get(name)
    if (e !== undefined && e.state === 'up') this.enter(e, 'suspect')
    // A peer that comes back under this name may be a member by then.
    this.plain.delete(name)
  }

  // --- rounds -----------------------------------------------------------------

  private schedule(ms: number): void {
    if (this.stopped) return
    this.timer = this.host.clock.setTimer(() => this.round(), ms)
  }

  private round(): void {
    if (this.stopped) return
    this.counts.rounds++
    const now = this.host.clock.now()
    this.refreshSelf()
    this.trySeeds(now)
    this.spread(now)
    const { gossipInterval } = this.options
    this.schedule(gossipInterval * (0.75 + Math.random() / 2))
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
    if (this.eager !== undefined || this.stopped) return
    const wait = Math.max(0, this.lastEager + EAGER_SPACING - this.host.clock.now())
    this.eager = this.host.clock.setTimer(() => {
      this.eager = undefined
      if (this.stopped) return
      this.lastEager = this.host.clock.now()
      this.spread(this.lastEager)
    }, wait)
  }

  /** Our own record follows our addresses. */
  private refreshSelf(): void {
    const addresses = this.ownAddresses()
    if (addresses.length === this.self.addresses.length && addresses.every((a, i) => a === this.self.addresses[i])) return
    this.self = { ...this.self, addresses, version: this.self.version + 1 }
    this.changed()
  }

  /** Where we are reached: advertise, else where we listen; the first MAX_ADDRESSES, as a record holds no more. */
  private ownAddresses(): string[] {
    return (this.options.advertise ?? this.host.addresses()).slice(0, MAX_ADDRESSES)
  }

  /**
   * Dial each seed whose member is not up: at once at the start, then after
   * a back-off on failures, and every {@link SEED_RECHECK} rounds while it
   * is not up (a partition may have cut us off from its side of the mesh).
   */
  private trySeeds(now: number): void {
    for (const [address, seed] of this.seeds) {
      if (seed.trying || seed.next > now) continue
      if (seed.name !== undefined && this.host.isUp(seed.name)) {
        seed.next = now + SEED_RECHECK * this.options.gossipInterval
        continue
      }
      seed.trying = true
      const timeout = Math.max(1000, 2 * this.options.gossipInterval)
      this.host.dial(address, { timeout }).then(
        (name) => {
          seed.trying = false
          seed.failures = 0
          seed.name = name
          seed.next = this.host.clock.now() + SEED_RECHECK * this.options.gossipInterval
        },
        (error: unknown) => {
          seed.trying = false
          // Our own address given as a seed (a common deployment): not a seed for us.
          if (error instanceof BilateralError && error.code === 'LOOPBACK') return void this.seeds.delete(address)
          seed.failures++
          seed.next = this.host.clock.now() + Math.min(MAX_SEED_BACKOFF, this.options.gossipInterval * 2 ** seed.failures)
        },
      )
    }
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
    let dials = 0
    // Addresses we dial or are linked to now, under any name.
    const dialled = new Set<string>()
    for (const e of this.entries.values()) if (e.state === 'connecting' || e.state === 'up') dialled.add(e.record.addresses[0] ?? '')
    for (const [name, e] of this.entries) {
      switch (e.state) {
        case 'known': {
          if (this.host.isUp(name)) {
            this.enter(e, 'up')
            break
          }
          const address = e.record.addresses[0]
          // The member that sorts first dials, unless only one side listens, or the other has not dialled within two rounds.
          const ours =
            !listening || Buffer.compare(Buffer.from(this.self.name), Buffer.from(name)) < 0 || now - e.since > 2 * gossipInterval
          // Bounds on what records make us dial: a few new dials a round, one name an address, and none for a while after losing it.
          const allowed = dials < MAX_DIALS_PER_ROUND && now - e.lostAt >= HOLD_DOWN_ROUNDS * gossipInterval && !dialled.has(address ?? '')
          if (address !== undefined && ours && allowed && !this.host.dialling(name)) {
            dials++
            dialled.add(address)
            try {
              this.host.connect(name, address)
              this.enter(e, 'connecting')
            } catch (error) {
              // No socket to be had now (file descriptors), or an address the node refuses: tried again a few rounds, then lost.
              this.failures++
              this.lastFailure = error instanceof Error ? error.message : String(error)
              if (++e.waited >= CONNECT_PERIODS) this.lost(e)
            }
          } else if (now - e.since > suspectTimeout + 2 * gossipInterval) this.lost(e)
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
          if (!this.host.isUp(name)) this.enter(e, 'suspect')
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
    for (const record of records) {
      // Far ahead of our clock: skipped (a forgery, or a clock far off), the rest of the exchange taken.
      if (tooLate(record)) {
        this.skipped++
        continue
      }
      if (record.name === this.self.name) {
        // Said to be dead or gone, or a later version than ours: we are alive, and say so with a version past it (not while leaving).
        if (!this.stopped && (newer(record, this.self) || record.status !== ALIVE)) this.refute(record)
        continue
      }
      const e = this.entries.get(record.name)
      if (e === undefined) {
        // News of the death or departure of a member we never knew (or forgot) is of no use: not taken, so tombstones end.
        if (record.status !== ALIVE) continue
        if (this.entries.size >= MAX_MEMBERS && !this.evictOne()) {
          this.dropped++
          continue
        }
        const state: MemberState = this.host.isUp(record.name) ? 'up' : 'known'
        this.entries.set(record.name, { record, state, since: this.host.clock.now(), waited: 0, lostAt: -Infinity })
        this.changed()
        continue
      }
      if (!newer(record, e.record)) continue
      // A new run of it is not held back by our having lost the last one.
      if (record.incarnation > e.record.incarnation) e.lostAt = -Infinity
      this.setRecord(e, record)
      if (record.status === LEFT) {
        this.enter(e, 'left')
        void this.stopDialling(record.name)
      } else if (record.status === DEAD) {
        // Lost by another member. Linked to it, we keep our link: it will hear of that record from us and answer it.
        if (!this.host.isUp(record.name)) {
          this.enter(e, 'gone')
          void this.stopDialling(record.name)
        }
      } else if (e.state === 'gone' || e.state === 'left') this.enter(e, this.host.isUp(record.name) ? 'up' : 'known')
    }
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
    this.evicted++
    this.changed()
    return true
  }

  /** We lost `e` for good: gone here, no longer dialled, and marked dead for the others (it answers that if it is alive after all). */
  private lost(e: Entry): void {
    this.enter(e, 'gone')
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

  private enter(e: Entry, state: MemberState): void {
    if (e.state === state) return
    e.state = state
    e.since = this.host.clock.now()
    e.waited = 0
  }

  private async stopDialling(name: string): Promise<void> {
    if (this.host.dialling(name)) await this.host.disconnect(name).catch(() => {})
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

/** Up to `n` of `items`, chosen at random. */
function pick<T>(items: readonly T[], n: number): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy.slice(0, n)
}
