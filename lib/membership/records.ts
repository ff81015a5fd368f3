/**
 * Member records, as gossip carries them: what a member says of itself (its
 * name, where it can be reached, which run of it this is) and whether it has
 * left. Only a member makes its own record; everyone else keeps the newest
 * one seen. Newer means a later run (`incarnation`), then a later change
 * within it (`version`); at the same point, a record saying it left wins.
 * Everything a peer sends is checked against the bounds below before it is
 * kept.
 */
import { createHash } from 'node:crypto'
import { encode } from '@msgpack/msgpack'
import { BilateralError } from '../errors.js'

/** One member, as gossip carries it (PROTOCOL.md 20). */
export interface MemberRecord {
  readonly name: string
  /** Where it listens (ZeroMQ endpoints); empty for a member that only dials. */
  readonly addresses: readonly string[]
  /** Which run of the member: its start time, ms since the epoch, so a restart is newer. */
  readonly incarnation: number
  /** Its changes within the run, counted from 0. */
  readonly version: number
  /** It left: parted from a node that saw it go, and told on from there. */
  readonly left: boolean
}

/** Most members a node keeps records of; a record for a new name beyond it is dropped (and counted). */
export const MAX_MEMBERS = 1024
/** Most addresses in one record, and the longest one, bytes. */
export const MAX_ADDRESSES = 8
export const MAX_ADDRESS_BYTES = 256
/** Highest version a record may have (then a member starts a new incarnation instead). */
export const MAX_VERSION = 0xffff_ffff
/** How far ahead of our clock a record's incarnation may be, ms: a forged one cannot stay newer than its member for long. */
export const MAX_SKEW = 60 * 60 * 1000
/** Most records in one exchange (a larger table takes more rounds). */
export const MAX_RECORDS_PER_EXCHANGE = 256

/** Is `a` newer than `b`? */
export function newer(a: MemberRecord, b: MemberRecord): boolean {
  if (a.incarnation !== b.incarnation) return a.incarnation > b.incarnation
  if (a.version !== b.version) return a.version > b.version
  return a.left && !b.left
}

/** A record as a digest entry: `[name, incarnation, version, left]`. */
export type DigestEntry = [string, number, number, boolean]

export const digestOf = (r: MemberRecord): DigestEntry => [r.name, r.incarnation, r.version, r.left]

/** The digest entry as a record without addresses, for comparing. */
export const fromDigest = ([name, incarnation, version, left]: DigestEntry): MemberRecord => ({
  name,
  addresses: [],
  incarnation,
  version,
  left,
})

const bad = (what: string): BilateralError => new BilateralError('INVALID_ARGUMENT', `a member record ${what}`)

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 255) throw bad('needs a name of 1 to 255 bytes')
}

/** A record from a peer, checked field by field; throws INVALID_ARGUMENT naming what is wrong. */
export function checkRecord(value: unknown): MemberRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('must be a map')
  const { name, addresses, incarnation, version, left } = value as Record<string, unknown>
  checkName(name)
  if (!Array.isArray(addresses) || addresses.length > MAX_ADDRESSES) throw bad(`needs at most ${MAX_ADDRESSES} addresses`)
  for (const a of addresses) {
    if (typeof a !== 'string' || Buffer.byteLength(a) > MAX_ADDRESS_BYTES || !/^[a-z]+:\/\/./.test(a)) {
      throw bad(`has an address that is not an endpoint of at most ${MAX_ADDRESS_BYTES} bytes`)
    }
  }
  if (!isCount(incarnation) || !isCount(version) || version > MAX_VERSION) {
    throw bad(`needs incarnation and version as non-negative integers (version at most ${MAX_VERSION})`)
  }
  if (incarnation > Date.now() + MAX_SKEW) throw bad('has an incarnation more than an hour ahead of our clock')
  if (typeof left !== 'boolean') throw bad('needs left as a boolean')
  return { name, addresses: [...(addresses as string[])], incarnation, version, left }
}

/** A digest from a peer, checked; throws INVALID_ARGUMENT. */
export function checkDigest(value: unknown): DigestEntry[] {
  if (!Array.isArray(value) || value.length > MAX_MEMBERS)
    throw new BilateralError('INVALID_ARGUMENT', `a digest holds at most ${MAX_MEMBERS} entries`)
  return value.map((entry: unknown) => {
    if (!Array.isArray(entry) || entry.length !== 4)
      throw new BilateralError('INVALID_ARGUMENT', 'a digest entry is [name, incarnation, version, left]')
    const [name, incarnation, version, left] = entry as unknown[]
    checkName(name)
    if (!isCount(incarnation) || !isCount(version) || typeof left !== 'boolean') {
      throw new BilateralError('INVALID_ARGUMENT', 'a digest entry is [name, incarnation, version, left]')
    }
    return [name, incarnation, version, left]
  })
}

/**
 * A table's hash, as `$mesh.Sync` compares it (PROTOCOL.md 20): SHA-256 of
 * the msgpack encoding (shortest forms) of its digest entries sorted by the
 * UTF-8 bytes of their names, in base64, its first 22 characters. Equal
 * tables have equal hashes, whichever member computes them.
 */
export function hashOf(digest: readonly DigestEntry[]): string {
  const sorted = [...digest].sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])))
  return createHash('sha256').update(encode(sorted)).digest('base64').slice(0, 22)
}

/** Records from a peer: at most {@link MAX_RECORDS_PER_EXCHANGE}, each checked. */
export function checkRecords(value: unknown): MemberRecord[] {
  if (!Array.isArray(value) || value.length > MAX_RECORDS_PER_EXCHANGE) {
    throw new BilateralError('INVALID_ARGUMENT', `an exchange carries at most ${MAX_RECORDS_PER_EXCHANGE} records`)
  }
  return value.map(checkRecord)
}
