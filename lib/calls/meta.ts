/**
 * Per-call metadata (PROTOCOL.md 8.2): string keys to string or binary
 * values, carried beside the arguments, visible to the handler as
 * `ctx.meta`. On the wire it is one msgpack map inside a `bin` field of the
 * CALL or CAST envelope, so an envelope never holds a map, and metadata a
 * peer got wrong fails only its own call.
 *
 * Identity never comes from metadata: `ctx.from` is what the link proved.
 */
import { BilateralError } from '../errors.js'

/** A call's metadata: lowercase keys (`traceparent`, `x-request-id`) to strings or bytes. */
export type Meta = Readonly<Record<string, string | Uint8Array>>

/** Keys: 1 to 64 characters of `a`–`z`, `0`–`9`, `-`, `_` and `.`, starting with a letter or digit. */
export const META_KEY = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** The most bytes an encoded metadata map may take (the limit of a binary field in an envelope). */
export const MAX_META_BYTES = 64 * 1024
/** The keys forwarded to nested calls by default: W3C trace context and baggage. */
export const DEFAULT_FORWARD_META: readonly string[] = ['traceparent', 'tracestate', 'baggage']
/** Most entries of a peer's metadata (each takes at least 3 bytes, so the byte limit allows fewer). */
const MAX_META_KEYS = 1024

const EMPTY: Meta = Object.freeze({})

/**
 * Check `meta` as given by a caller and encode it, as msgpack writes a map
 * of strings and binaries (byte for byte: shortest headers, keys in order);
 * undefined when it holds nothing. A TypeError names the key at fault;
 * TOO_LARGE if the encoded map exceeds `max` bytes. Written by hand: it is
 * made for every call that carries metadata.
 */
export function encodeMeta(meta: unknown, max: number): Uint8Array | undefined {
  if (meta === undefined) return undefined
  checkMetaShape(meta)
  const keys = Object.keys(meta as object)
  if (keys.length === 0) return undefined
  const values = new Array<string | Uint8Array>(keys.length)
  const lengths = new Array<number>(keys.length)
  let size = keys.length < 16 ? 1 : keys.length < 0x10000 ? 3 : 5
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (!META_KEY.test(key)) {
      throw new TypeError(
        `meta key ${JSON.stringify(key.length > 70 ? `${key.slice(0, 70)}…` : key)} must be 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)`,
      )
    }
    const value = (meta as Record<string, unknown>)[key]
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) throw new TypeError(`meta.${key} must be a string or a Uint8Array`)
    values[i] = value
    // Keys are ASCII: a character a byte.
    const length = typeof value === 'string' ? Buffer.byteLength(value) : value.length
    lengths[i] = length
    size += (key.length < 32 ? 1 : 2) + key.length + header(typeof value === 'string', length) + length
  }
  if (size > max) throw new BilateralError('TOO_LARGE', `the metadata encodes to ${size} bytes, more than maxMetaBytes (${max})`)
  const out = Buffer.allocUnsafe(size)
  let at = lengthHeader(out, 0, keys.length, MAP)
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    at = lengthHeader(out, at, key.length, STR)
    at += out.write(key, at, 'latin1')
    const value = values[i]!
    if (typeof value === 'string') {
      at = lengthHeader(out, at, lengths[i]!, STR)
      at += out.write(value, at, 'utf8')
    } else {
      at = lengthHeader(out, at, value.length, BIN)
      out.set(value, at)
      at += value.length
    }
  }
  return out
}

/** A TypeError unless `meta` is undefined or an object (not an array, not bytes). */
export function checkMetaShape(meta: unknown): void {
  if (meta !== undefined && (meta === null || typeof meta !== 'object' || Array.isArray(meta) || ArrayBuffer.isView(meta))) {
    throw new TypeError('meta must be an object of string keys to string or Uint8Array values')
  }
}

/** Bytes of the header msgpack writes before a string or binary of `length` bytes. */
const header = (string: boolean, length: number): number => (string && length < 32 ? 1 : length < 0x100 ? 2 : length < 0x10000 ? 3 : 5)

/** msgpack's length headers: the fix form's tag and bound (0: none), then the 8-bit (0: none), 16-bit and 32-bit tags. */
type Forms = readonly [fix: number, fixBound: number, b8: number, b16: number, b32: number]
const MAP: Forms = [0x80, 16, 0, 0xde, 0xdf]
const STR: Forms = [0xa0, 32, 0xd9, 0xda, 0xdb]
const BIN: Forms = [0, 0, 0xc4, 0xc5, 0xc6]

/** The shortest header of `forms` for `n` at `at`; returns where it ends. */
function lengthHeader(out: Buffer, at: number, n: number, [fix, fixBound, b8, b16, b32]: Forms): number {
  if (n < fixBound) {
    out[at] = fix | n
    return at + 1
  }
  if (b8 !== 0 && n < 0x100) {
    out[at] = b8
    out[at + 1] = n
    return at + 2
  }
  if (n < 0x10000) {
    out[at] = b16
    return out.writeUInt16BE(n, at + 1)
  }
  out[at] = b32
  return out.writeUInt32BE(n, at + 1)
}

/**
 * The metadata a peer sent, checked against our own `max` and the rules of
 * {@link encodeMeta}: a frozen object, or a BAD_REQUEST saying what is
 * wrong. Read by hand: one map of string keys to strings and binaries, with
 * nothing nested and nothing after it.
 */
export function decodeMeta(bytes: Uint8Array | undefined, max: number, peer: string): Meta {
  if (bytes === undefined) return EMPTY
  if (bytes.length > max) throw bad(peer, `${bytes.length} bytes, more than maxMetaBytes (${max})`)
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
  const need = (at: number, n: number): void => {
    if (at + n > b.length) throw bad(peer, 'it is truncated')
  }
  const h = b[0]
  let at: number
  let count: number
  if (h === undefined) throw bad(peer, 'it is empty')
  if (h >= 0x80 && h <= 0x8f) {
    count = h & 0x0f
    at = 1
  } else if (h === 0xde || h === 0xdf) {
    need(1, h === 0xde ? 2 : 4)
    count = h === 0xde ? b.readUInt16BE(1) : b.readUInt32BE(1)
    at = h === 0xde ? 3 : 5
  } else throw bad(peer, 'it is not one msgpack map of strings')
  if (count > MAX_META_KEYS) throw bad(peer, `${count} keys, more than ${MAX_META_KEYS}`)
  /** A str or bin at `at`: its kind, start and end. */
  const item = (): { string: boolean; start: number; end: number } => {
    need(at, 1)
    const t = b[at]!
    let string = true
    let start: number
    let length: number
    if (t >= 0xa0 && t <= 0xbf) {
      length = t & 0x1f
      start = at + 1
    } else {
      const kind = t === 0xd9 || t === 0xc4 ? 1 : t === 0xda || t === 0xc5 ? 2 : t === 0xdb || t === 0xc6 ? 4 : 0
      if (kind === 0) throw bad(peer, 'a key or value is neither a string nor binary (nothing may nest)')
      string = t >= 0xd9
      need(at + 1, kind)
      length = kind === 1 ? b[at + 1]! : kind === 2 ? b.readUInt16BE(at + 1) : b.readUInt32BE(at + 1)
      start = at + 1 + kind
    }
    need(start, length)
    at = start + length
    return { string, start, end: at }
  }
  const out: Record<string, string | Uint8Array> = {}
  for (let i = 0; i < count; i++) {
    const k = item()
    const key = k.string ? b.toString('utf8', k.start, k.end) : undefined
    if (key === undefined || !META_KEY.test(key)) {
      throw bad(peer, `the key ${key === undefined ? '(binary)' : JSON.stringify(key.slice(0, 70))} is not a metadata key`)
    }
    const v = item()
    // A copy of binary values: the bytes belong to a message that may be large.
    out[key] = v.string ? b.toString('utf8', v.start, v.end) : new Uint8Array(b.subarray(v.start, v.end))
  }
  if (at !== b.length) throw bad(peer, 'bytes follow the map')
  return Object.freeze(out)
}

/** The entries of `from` whose keys are in `keys`. */
export function pick(from: Meta, keys: ReadonlySet<string>): Record<string, string | Uint8Array> {
  const out: Record<string, string | Uint8Array> = {}
  for (const key in from) if (keys.has(key)) out[key] = from[key]!
  return out
}

function bad(peer: string, why: string): BilateralError {
  return new BilateralError('BAD_REQUEST', `the metadata from ${peer} was refused: ${why}`, { peer })
}
