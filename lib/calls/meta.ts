/**
 * Per-call metadata (PROTOCOL.md 8.2): string keys to string or binary
 * values, carried beside the arguments, visible to the handler as
 * `ctx.meta`. On the wire it is one msgpack map inside a `bin` field of the
 * CALL or CAST envelope, so an envelope never holds a map, and metadata a
 * peer got wrong fails only its own call.
 *
 * Identity never comes from metadata: `ctx.from` is what the link proved.
 */
import { Decoder, Encoder } from '@msgpack/msgpack'
import { BilateralError } from '../errors.js'

/** A call's metadata: lowercase keys (`traceparent`, `x-request-id`) to strings or bytes. */
export type Meta = Readonly<Record<string, string | Uint8Array>>

/** Keys: 1 to 64 characters of `a`–`z`, `0`–`9`, `-`, `_` and `.`, starting with a letter or digit. */
export const META_KEY = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** The most bytes an encoded metadata map may take (the limit of a binary field in an envelope). */
export const MAX_META_BYTES = 64 * 1024
/** The keys forwarded to nested calls by default: W3C trace context and baggage. */
export const DEFAULT_FORWARD_META: readonly string[] = ['traceparent', 'tracestate', 'baggage']

const encoder = new Encoder()
const EMPTY: Meta = Object.freeze({})

/**
 * Check `meta` as given by a caller and encode it; undefined when it holds
 * nothing. A TypeError names the key at fault; TOO_LARGE if the encoded map
 * exceeds `max` bytes.
 */
export function encodeMeta(meta: unknown, max: number): Uint8Array | undefined {
  if (meta === undefined) return undefined
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || ArrayBuffer.isView(meta)) {
    throw new TypeError('meta must be an object of string keys to string or Uint8Array values')
  }
  const plain: Record<string, string | Uint8Array> = {}
  let keys = 0
  for (const [key, value] of Object.entries(meta)) {
    if (!META_KEY.test(key)) {
      throw new TypeError(
        `meta key ${JSON.stringify(key.length > 70 ? `${key.slice(0, 70)}…` : key)} must be 1 to 64 of a-z 0-9 . _ - (starting with a letter or digit)`,
      )
    }
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
      throw new TypeError(`meta.${key} must be a string or a Uint8Array`)
    }
    plain[key] = value
    keys++
  }
  if (keys === 0) return undefined
  const bytes = encoder.encode(plain)
  if (bytes.byteLength > max) {
    throw new BilateralError('TOO_LARGE', `the metadata encodes to ${bytes.byteLength} bytes, more than maxMetaBytes (${max})`)
  }
  return Buffer.from(bytes)
}

/**
 * The metadata a peer sent, checked against our own `max` and the rules of
 * {@link encodeMeta}: a frozen object, or a BAD_REQUEST saying what is wrong.
 */
export function decodeMeta(bytes: Uint8Array | undefined, max: number, peer: string): Meta {
  if (bytes === undefined) return EMPTY
  if (bytes.length > max) throw bad(peer, `${bytes.length} bytes, more than maxMetaBytes (${max})`)
  let value: unknown
  try {
    value = decoderFor(max).decode(bytes)
  } catch (error) {
    throw bad(peer, `not one msgpack map of strings: ${(error as Error).message}`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw bad(peer, 'not a map')
  }
  const out: Record<string, string | Uint8Array> = {}
  for (const [key, v] of Object.entries(value)) {
    if (!META_KEY.test(key)) throw bad(peer, `the key ${JSON.stringify(key.slice(0, 70))} is not a metadata key`)
    if (typeof v === 'string') out[key] = v
    // A copy: the bytes belong to a message that may be large.
    else if (v instanceof Uint8Array) out[key] = new Uint8Array(v)
    else throw bad(peer, `the value of ${key} is neither a string nor binary`)
  }
  return Object.freeze(out)
}

/** The entries of `from` whose keys are in `keys`. */
export function pick(from: Meta, keys: ReadonlySet<string>): Record<string, string | Uint8Array> {
  const out: Record<string, string | Uint8Array> = {}
  for (const key in from) if (keys.has(key)) out[key] = from[key]!
  return out
}

const decoders = new Map<number, Decoder>()

/** A decoder that builds nothing larger than `max` allows: a map of strings and binaries, nothing nested. */
function decoderFor(max: number): Decoder {
  let d = decoders.get(max)
  if (d === undefined) {
    d = new Decoder({ maxStrLength: max, maxBinLength: max, maxArrayLength: 0, maxMapLength: 1024, maxExtLength: 0 })
    if (decoders.size > 8) decoders.clear()
    decoders.set(max, d)
  }
  return d
}

function bad(peer: string, why: string): BilateralError {
  return new BilateralError('BAD_REQUEST', `the metadata from ${peer} was refused: ${why}`, { peer })
}
