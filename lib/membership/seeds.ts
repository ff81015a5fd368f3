/**
 * Seeds: the members a node asks first. Each is dialled at the start, again
 * after a back-off while none of its addresses answers, and every
 * {@link SEED_RECHECK} rounds while its member is not up (a partition may
 * have cut us off from its side of the mesh).
 *
 * A seed is an endpoint (`tcp://10.0.0.5:7000`), or on an encrypted mesh the
 * member's key and its endpoint (`KEY@tcp://...`). Its host may be a name:
 * then every address the name resolves to (at most
 * {@link MAX_SEED_ADDRESSES}) is tried, and the name is resolved again each
 * time the seed is due, so a Kubernetes headless service's members are found
 * as they come and go. The resolver is injectable; the default asks the
 * system's (`dns.lookup`, every address).
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import type { Clock } from '../clock.js'
import { BilateralError } from '../errors.js'

/** Rounds between checks that a seed reached once is still up. */
export const SEED_RECHECK = 10
/** Longest wait between attempts on a seed that does not answer, ms. */
const MAX_SEED_BACKOFF = 30_000
/** Most seeds a node holds. */
export const MAX_SEEDS = 64
/** Most addresses of one seed's host name tried. */
export const MAX_SEED_ADDRESSES = 16

/** Resolves a host name to its addresses (IPv4 or IPv6 literals). */
export type Resolver = (host: string) => Promise<readonly string[]>

export const systemResolver: Resolver = async (host) => (await lookup(host, { all: true })).map((a) => a.address)

export interface SeedHost {
  readonly name: string
  readonly clock: Clock
  /** Plaintext: connect to whoever listens at `address`; its name once up. */
  dial(address: string, options: { timeout: number }): Promise<string>
  /** Encrypted: dial member `key` at `address` (kept up until it is gone). */
  connect(key: string, address: string): void
  disconnect(key: string): Promise<void>
  /** May a member of this name be in the table (on an encrypted mesh: a key `authorizedKeys` admits)? */
  admits(name: string): boolean
  /** Where we dial `key` now, if we do. */
  dialAddress(key: string): string | undefined
  isUp(name: string): boolean
  dialling(name: string): boolean
}

interface Seed {
  /** As given. */
  readonly given: string
  /** The member's key, for a seed on an encrypted mesh. */
  readonly key: string | undefined
  readonly endpoint: string
  /** Its host, when that is a name to resolve; and its transport and port. */
  readonly host: string | undefined
  readonly port: string
  next: number
  failures: number
  trying: boolean
  /** Keyed: which of its addresses to dial next, and where it dialled last. */
  turn: number
  dialled?: string
  /** The member reached at each address (plaintext seeds learn it on reaching). */
  readonly reached: Map<string, string>
}

/** `KEY@endpoint` (a key is 40 Z85 characters, which may include `@`) or an endpoint. */
export function parseSeed(seed: string): { key: string | undefined; endpoint: string } {
  return seed.length > 41 && seed[40] === '@' && !seed.slice(0, 40).includes('://')
    ? { key: seed.slice(0, 40), endpoint: seed.slice(41) }
    : { key: undefined, endpoint: seed }
}

/** A tcp endpoint's host when it is a name (not an IP literal, not `*`), and its port. */
function hostName(endpoint: string): { host: string | undefined; port: string } {
  const m = /^tcp:\/\/([^[\]:/]+):(\d+)$/.exec(endpoint)
  if (m === null || isIP(m[1]!) !== 0 || m[1] === '*') return { host: undefined, port: '' }
  return { host: m[1]!, port: m[2]! }
}

export class Seeds {
  private readonly seeds: Seed[] = []
  /** Addresses that turned out to be our own (LOOPBACK): not tried again. */
  private readonly own = new Set<string>()
  /** Attempts that failed before dialling: a name that did not resolve, or a connect() that threw. */
  failures = 0

  constructor(
    private readonly host: SeedHost,
    seeds: readonly string[],
    private readonly resolve: Resolver,
    private readonly gossipInterval: number,
  ) {
    this.add(seeds)
  }

  /** More seeds (one already held is not added twice); INVALID_ARGUMENT beyond {@link MAX_SEEDS} in all. */
  add(seeds: readonly string[]): void {
    const fresh = [...new Set(seeds)].filter((given) => !this.seeds.some((s) => s.given === given))
    if (this.seeds.length + fresh.length > MAX_SEEDS) {
      throw new BilateralError('INVALID_ARGUMENT', `a node holds at most ${MAX_SEEDS} seeds`)
    }
    for (const given of fresh) {
      const { key, endpoint } = parseSeed(given)
      this.seeds.push({ given, key, endpoint, ...hostName(endpoint), next: 0, failures: 0, trying: false, turn: 0, reached: new Map() })
    }
  }

  private stopped = false

  /** No more attempts (the node leaves): one in progress does nothing more. */
  stop(): void {
    this.stopped = true
  }

  /** Try each seed that is due. */
  due(now: number): void {
    for (const seed of this.seeds) {
      if (seed.trying || seed.next > now || this.stopped) continue
      seed.trying = true
      this.attempt(seed)
        .catch(() => this.failures++)
        .finally(() => (seed.trying = false))
    }
  }

  /** One attempt on `seed`, then when to try again: sooner (a back-off) if its member is not up. */
  private async attempt(seed: Seed): Promise<void> {
    if (seed.key === this.host.name) return // Our own key among the seeds (one list for every node): not a seed for us.
    let addresses: readonly string[]
    try {
      addresses = (await this.addressesOf(seed)).filter((address) => !this.own.has(address))
    } catch {
      this.failures++
      addresses = []
    }
    if (this.stopped) return
    const reached = seed.key === undefined ? await this.dialAll(seed, addresses) : await this.dialKey(seed, seed.key, addresses)
    const now = this.host.clock.now()
    if (reached) {
      seed.failures = 0
      seed.next = now + SEED_RECHECK * this.gossipInterval
    } else {
      seed.failures++
      seed.next = now + Math.min(MAX_SEED_BACKOFF, this.gossipInterval * 2 ** seed.failures)
    }
  }

  /** Plaintext: dial each address whose member is not up, by address alone. Whether any is up. */
  private async dialAll(seed: Seed, addresses: readonly string[]): Promise<boolean> {
    const timeout = Math.max(1000, 2 * this.gossipInterval)
    const tries = addresses.map(async (address): Promise<boolean> => {
      const name = seed.reached.get(address)
      if (name !== undefined && this.host.isUp(name)) return true
      try {
        seed.reached.set(address, await this.host.dial(address, { timeout }))
        return true
      } catch (error) {
        // Our own address given as a seed (a common deployment, and a headless service lists us too): not a seed for us.
        if (error instanceof BilateralError && error.code === 'LOOPBACK') this.own.add(address)
        return false
      }
    })
    return (await Promise.all(tries)).some((up) => up)
  }

  /**
   * Encrypted: the seed's key is one member, dialled at one address at a
   * time. Not up when the seed comes due again, it is dialled at the next of
   * the addresses its host resolves to now (so a name that resolves to
   * several, or elsewhere later, is tried everywhere). Whether it is up.
   */
  private async dialKey(seed: Seed, key: string, addresses: readonly string[]): Promise<boolean> {
    // A seed key authorizedKeys no longer admits is not dialled (a dial would trust it again), until it is admitted again.
    if (!this.host.admits(key)) return false
    if (this.host.isUp(key)) return true
    if (addresses.length === 0) return false
    if (this.host.dialling(key)) {
      // A dial of the key that is not the seed's own (membership's, at the member's own address) is left alone.
      if (this.host.dialAddress(key) !== seed.dialled) return false
      await this.host.disconnect(key)
    }
    const address = addresses[seed.turn++ % addresses.length]!
    if (this.stopped) return false
    try {
      this.host.connect(key, address)
      seed.dialled = address
    } catch (error) {
      if (error instanceof BilateralError && error.code === 'LOOPBACK') this.own.add(address)
      else this.failures++
    }
    return false
  }

  /** The resolver's answer, or a TIMEOUT once the seed's dial would have given up: a lookup that hangs does not hold the seed. */
  private async resolveWithin(host: string): Promise<readonly string[]> {
    const ms = Math.max(1000, 2 * this.gossipInterval)
    let timer: unknown
    const late = new Promise<never>((_, reject) => {
      timer = this.host.clock.setTimer(() => reject(new BilateralError('TIMEOUT', `no answer within ${ms} ms`)), ms)
    })
    try {
      return await Promise.race([Promise.resolve().then(() => this.resolve(host)), late])
    } finally {
      this.host.clock.clearTimer(timer)
    }
  }

  /** The endpoints a seed stands for now: itself, or one for each address its host name resolves to. */
  private async addressesOf(seed: Seed): Promise<readonly string[]> {
    if (seed.host === undefined) return [seed.endpoint]
    const resolved = await this.resolveWithin(seed.host)
    if (!Array.isArray(resolved)) throw new TypeError('the resolver did not answer with an array of addresses')
    const out: string[] = []
    for (const ip of resolved.slice(0, MAX_SEED_ADDRESSES)) {
      const family = typeof ip === 'string' ? isIP(ip) : 0
      if (family !== 0) out.push(family === 6 ? `tcp://[${ip}]:${seed.port}` : `tcp://${ip}:${seed.port}`)
    }
    return out
  }
}
