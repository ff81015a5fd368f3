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
/** Most addresses of one seed's host name tried. */
export const MAX_SEED_ADDRESSES = 16

/** Resolves a host name to its addresses (IPv4 or IPv6 literals). */
export type Resolver = (host: string) => Promise<readonly string[]>

export const systemResolver: Resolver = async (host) => (await lookup(host, { all: true })).map((a) => a.address)

export interface SeedHost {
  readonly clock: Clock
  /** Plaintext: connect to whoever listens at `address`; its name once up. */
  dial(address: string, options: { timeout: number }): Promise<string>
  /** Encrypted: dial member `key` at `address` (kept up until it is gone). */
  connect(key: string, address: string): void
  isUp(name: string): boolean
  dialling(name: string): boolean
}

interface Seed {
  /** The member's key, for a seed on an encrypted mesh. */
  readonly key: string | undefined
  readonly endpoint: string
  /** Its host, when that is a name to resolve; and its transport and port. */
  readonly host: string | undefined
  readonly port: string
  next: number
  failures: number
  trying: boolean
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
  /** Resolutions that failed, and the last reason. */
  failures = 0
  lastFailure: string | undefined

  constructor(
    private readonly host: SeedHost,
    seeds: readonly string[],
    private readonly resolve: Resolver,
    private readonly gossipInterval: number,
  ) {
    for (const given of seeds) {
      const { key, endpoint } = parseSeed(given)
      this.seeds.push({ key, endpoint, ...hostName(endpoint), next: 0, failures: 0, trying: false, reached: new Map() })
    }
  }

  /** Try each seed that is due. */
  due(now: number): void {
    for (const seed of this.seeds) {
      if (seed.trying || seed.next > now) continue
      seed.trying = true
      void this.attempt(seed).finally(() => (seed.trying = false))
    }
  }

  /** One attempt on `seed`: each of its addresses whose member is not up; then when to try again. */
  private async attempt(seed: Seed): Promise<void> {
    let addresses: readonly string[]
    try {
      addresses = await this.addressesOf(seed)
    } catch (error) {
      this.failures++
      this.lastFailure = `${seed.host} did not resolve: ${error instanceof Error ? error.message : String(error)}`
      addresses = []
    }
    const tries = addresses
      .filter((address) => !this.own.has(address))
      .map(async (address): Promise<boolean> => {
        const name = seed.key ?? seed.reached.get(address)
        if (name !== undefined && this.host.isUp(name)) return true
        if (seed.key !== undefined) {
          if (!this.host.dialling(seed.key)) this.host.connect(seed.key, address)
          return false
        }
        const timeout = Math.max(1000, 2 * this.gossipInterval)
        try {
          seed.reached.set(address, await this.host.dial(address, { timeout }))
          return true
        } catch (error) {
          // Our own address given as a seed (a common deployment, and a headless service lists us too): not a seed for us.
          if (error instanceof BilateralError && error.code === 'LOOPBACK') this.own.add(address)
          return false
        }
      })
    const reached = (await Promise.all(tries)).some((up) => up)
    const now = this.host.clock.now()
    if (reached || seed.key !== undefined) {
      // Reached (or, keyed, dialled: the dial goes on by itself): checked again in a while.
      seed.failures = 0
      seed.next = now + SEED_RECHECK * this.gossipInterval
    } else {
      seed.failures++
      seed.next = now + Math.min(MAX_SEED_BACKOFF, this.gossipInterval * 2 ** seed.failures)
    }
  }

  /** The endpoints a seed stands for now: itself, or one for each address its host name resolves to. */
  private async addressesOf(seed: Seed): Promise<readonly string[]> {
    if (seed.host === undefined) return [seed.endpoint]
    const resolved = await this.resolve(seed.host)
    if (!Array.isArray(resolved)) throw new TypeError('the resolver did not answer with an array of addresses')
    const out: string[] = []
    for (const ip of resolved.slice(0, MAX_SEED_ADDRESSES)) {
      const family = typeof ip === 'string' ? isIP(ip) : 0
      if (family !== 0) out.push(family === 6 ? `tcp://[${ip}]:${seed.port}` : `tcp://${ip}:${seed.port}`)
    }
    return out
  }
}
