/**
 * Member records, as gossip carries them: what a member says of itself (its
 * name, where it can be reached, which run of it this is) and its status:
 * alive, dead (a member that was linked to it lost it and it did not come
 * back), or left (it said so). Only a member makes its own alive record;
 * another marks it dead or left at the same incarnation and version, so that
 * news spreads as a newer record, and a member alive after all answers a
 * dead record of itself with a later version. Newer means a later run
 * (`incarnation`), then a later change within it (`version`), then, at the
 * same point, the higher status. Everything a peer sends is checked against
 * the bounds below before it is kept.
 */
import { createHash } from 'node:crypto'
import { encode } from '@msgpack/msgpack'
import { BilateralError } from '../errors.js'
import { MAX_NAME_BYTES } from '../wire/frames.js'
import { compareUtf8 } from '../utf8-order.js'

/** One member, as gossip carries it (PROTOCOL.md 20). */
export interface MemberRecord {
  readonly name: string
  /** Where it listens (ZeroMQ endpoints); empty for a member that only dials. */
  readonly addresses: readonly string[]
  /** What it is for (the `roles` option), for calls addressed by role. */
  readonly roles: readonly string[]
  /** The receivers it announces (those every peer may call, unless registered with `announce`), for calls addressed by what a member offers. */
  readonly offers: readonly string[]
  /** Which run of the member: its start time, ms since the epoch, so a restart is newer. */
  readonly incarnation: number
  /** Its changes within the run, counted from 0. */
  readonly version: number
  readonly status: Status
}

/** A record's status: alive, dead (lost by a member linked to it), left (it said so). Higher wins at the same incarnation and version. */
export type Status = 0 | 1 | 2
export const ALIVE = 0
export const DEAD = 1
export const LEFT = 2

/** Most members a node keeps records of; a record for a new name beyond it is dropped (and counted). */
export const MAX_MEMBERS = 1024
/** Most addresses in one record, and the longest one, bytes. */
export const MAX_ADDRESSES = 8
export const MAX_ADDRESS_BYTES = 256
/** Most roles in one record, and the longest one, bytes. */
export const MAX_ROLES = 16
export const MAX_ROLE_BYTES = 64
/** Most receivers one record announces, and the longest name, bytes. */
export const MAX_OFFERS = 64
export const MAX_OFFER_BYTES = 64
/** Highest version a record may have (then a member starts a new incarnation instead). */
export const MAX_VERSION = 0xffff_ffff
/** How far ahead of our clock a record's incarnation may be, ms: a forged one cannot stay newer than its member for long. */
export const MAX_SKEW = 5 * 60 * 1000
/** Most records in one exchange (a larger table takes more rounds). */
export const MAX_RECORDS_PER_EXCHANGE = 256

/** Is `a` newer than `b`? */
export function newer(a: MemberRecord, b: MemberRecord): boolean {
  if (a.incarnation !== b.incarnation) return a.incarnation > b.incarnation
  if (a.version !== b.version) return a.version > b.version
  return a.status > b.status
}

/** A record as a digest entry: `[name, incarnation, version, status]`. */
export type DigestEntry = [string, number, number, Status]

export const digestOf = (r: MemberRecord): DigestEntry => [r.name, r.incarnation, r.version, r.status]

/** The digest entry as a record without addresses, for comparing. */
export const fromDigest = ([name, incarnation, version, status]: DigestEntry): MemberRecord => ({
  name,
  addresses: [],
  roles: [],
  offers: [],
  incarnation,
  version,
  status,
})

const isStatus = (s: unknown): s is Status => s === ALIVE || s === DEAD || s === LEFT

const bad = (what: string): BilateralError => new BilateralError('INVALID_ARGUMENT', `a member record ${what}`)

/** A count: a non-negative safe integer, as a number, a BigInt (a 64-bit msgpack integer decodes so) or an integral float; else undefined. */
function count(n: unknown): number | undefined {
  const v = typeof n === 'bigint' && n >= 0n && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined
}

/** A member's name: 1 to 255 bytes, and not an endpoint (the mesh tells a dial by address alone by its address). */
export const isMemberName = (name: unknown): name is string =>
  typeof name === 'string' && name.length > 0 && Buffer.byteLength(name) <= MAX_NAME_BYTES && !isEndpoint(name)

/** A role: 1 to MAX_ROLE_BYTES bytes. */
export const isRole = (r: unknown): r is string => typeof r === 'string' && r.length > 0 && Buffer.byteLength(r) <= MAX_ROLE_BYTES

/** A receiver name as a record announces it: 1 to MAX_OFFER_BYTES bytes. */
const isOffer = (r: unknown): r is string => typeof r === 'string' && r.length > 0 && Buffer.byteLength(r) <= MAX_OFFER_BYTES

/** An optional list field of a record: absent is empty (a record of the first membership release has neither). */
function list(value: unknown, max: number, each: (v: unknown) => boolean, what: string): string[] {
  if (value === undefined) return []
  if (!Array.isArray(value) || value.length > max || !value.every(each)) throw bad(what)
  return [...(value as string[])]
}

/** A ZeroMQ endpoint as membership takes one: transport://something, at most MAX_ADDRESS_BYTES. */
export const isAddress = (a: unknown): a is string => isEndpoint(a) && Buffer.byteLength(a) <= MAX_ADDRESS_BYTES

/** Is `value` written as a ZeroMQ endpoint (`transport://something`)? The node's addresses are checked with this too. */
export const isEndpoint = (value: unknown): value is string => typeof value === 'string' && /^[a-z]+:\/\/./.test(value)

/** A record from a peer, checked field by field; throws INVALID_ARGUMENT naming what is wrong. */
export function checkRecord(value: unknown): MemberRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('must be a map')
  const fields = value as Record<string, unknown>
  const { name, addresses, status } = fields
  if (!isMemberName(name)) throw bad(`needs a name of 1 to ${MAX_NAME_BYTES} bytes that is not an endpoint`)
  if (!Array.isArray(addresses) || addresses.length > MAX_ADDRESSES || !addresses.every(isAddress)) {
    throw bad(`needs at most ${MAX_ADDRESSES} addresses, each an endpoint of at most ${MAX_ADDRESS_BYTES} bytes`)
  }
  const incarnation = count(fields.incarnation)
  const version = count(fields.version)
  if (incarnation === undefined || version === undefined || version > MAX_VERSION) {
    throw bad(`needs incarnation and version as non-negative integers (version at most ${MAX_VERSION})`)
  }
  if (!isStatus(status)) throw bad('needs status 0 (alive), 1 (dead) or 2 (left)')
  const roles = list(fields.roles, MAX_ROLES, isRole, `has at most ${MAX_ROLES} roles, each of 1 to ${MAX_ROLE_BYTES} bytes`)
  const offers = list(
    fields.offers,
    MAX_OFFERS,
    isOffer,
    `offers at most ${MAX_OFFERS} receivers, each named in 1 to ${MAX_OFFER_BYTES} bytes`,
  )
  return { name, addresses: [...addresses], roles, offers, incarnation, version, status }
}

/** Is `record` too far ahead of our clock to take (a forgery, or a clock far off)? Such a record is skipped, not refused. */
export const tooLate = (record: MemberRecord): boolean => record.incarnation > Date.now() + MAX_SKEW

const badEntry = (): BilateralError => new BilateralError('INVALID_ARGUMENT', 'a digest entry is [name, incarnation, version, status]')

/** A digest from a peer: at most one entry a member and one for the peer itself; throws INVALID_ARGUMENT. */
export function checkDigest(value: unknown): DigestEntry[] {
  if (!Array.isArray(value) || value.length > MAX_MEMBERS + 1) {
    throw new BilateralError('INVALID_ARGUMENT', `a digest is an array of at most ${MAX_MEMBERS + 1} entries`)
  }
  return value.map((entry: unknown) => {
    if (!Array.isArray(entry) || entry.length !== 4) throw badEntry()
    const [name, , , status] = entry as unknown[]
    const incarnation = count(entry[1])
    const version = count(entry[2])
    if (!isMemberName(name) || incarnation === undefined || version === undefined || !isStatus(status)) throw badEntry()
    return [name, incarnation, version, status]
  })
}

/**
 * A table's hash, as `$mesh.Sync` compares it (PROTOCOL.md 20): SHA-256 of
 * the msgpack encoding (shortest forms) of its digest entries sorted by the
 * UTF-8 bytes of their names, in base64, its first 22 characters. Equal
 * tables have equal hashes, whichever member computes them.
 */
export function hashOf(digest: readonly DigestEntry[]): string {
  const sorted = [...digest].sort((a, b) => compareUtf8(a[0], b[0]))
  return createHash('sha256').update(encode(sorted)).digest('base64').slice(0, 22)
}

/** Records from a peer: at most {@link MAX_RECORDS_PER_EXCHANGE}, each checked. */
export function checkRecords(value: unknown): MemberRecord[] {
  if (!Array.isArray(value) || value.length > MAX_RECORDS_PER_EXCHANGE) {
    throw new BilateralError('INVALID_ARGUMENT', `records must be an array of at most ${MAX_RECORDS_PER_EXCHANGE}`)
  }
  return value.map(checkRecord)
}
