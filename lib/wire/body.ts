/**
 * Encoding call arguments and results as message bodies (PROTOCOL.md
 * section 7). A value msgpack would carry unchanged is encoded; one it
 * would silently change (a Map or Set becomes `{}`, an invalid Date a date
 * in 1970, a Float32Array its raw bytes, a BigInt beyond 64 bits wraps) is
 * refused with a TypeError that says what and where.
 */
import { Encoder } from '@msgpack/msgpack'
import { MAX_DEPTH } from './walk.js'

/**
 * The encoder's buffer grows to the largest value it encoded. Beyond this
 * many bytes it is dropped once a value a quarter of it or less is encoded:
 * a run of large values keeps it, a single one does not keep it for good.
 */
const KEEP_BUFFER = 1024 * 1024

const INT64_MIN = -(2n ** 63n)
const UINT64_MAX = 2n ** 64n - 1n

/** A value that msgpack would change: what it is. */
class Unfaithful extends Error {}
/** A container beyond level MAX_DEPTH: the decoder would refuse the body. */
class TooDeep extends Error {}

interface EncoderInternals {
  encodeBigInt64(value: bigint): void
  encodeObject(object: unknown, depth: number): void
  view: DataView
}

function makeEncoder(): Encoder {
  // msgpack counts every value's depth, scalars too; a level here is a container (PROTOCOL.md 7), checked below, so a scalar inside the deepest one passes.
  const encoder = new Encoder({ useBigInt64: true, maxDepth: MAX_DEPTH + 1 })
  const internals = encoder as unknown as EncoderInternals
  // msgpack writes a BigInt with DataView.setBig(U)Int64, which wraps silently: 2n ** 64n would go out as 0.
  const encodeBigInt64 = internals.encodeBigInt64.bind(encoder)
  internals.encodeBigInt64 = (value) => {
    if (value < INT64_MIN || value > UINT64_MAX) throw new Unfaithful(`a BigInt beyond 64 bits (${value})`)
    encodeBigInt64(value)
  }
  const encodeObject = internals.encodeObject.bind(encoder)
  internals.encodeObject = (object, depth) => {
    // `depth` is the level this value is at, the root's 1: a container at level MAX_DEPTH + 1 is too deep.
    if (depth > MAX_DEPTH && isContainer(object)) throw new TooDeep()
    // Plain objects, arrays and Uint8Arrays, nearly everything a body holds, are let through on one comparison.
    const proto: unknown = Object.getPrototypeOf(object)
    if (
      proto !== Object.prototype &&
      proto !== Array.prototype &&
      proto !== null &&
      proto !== Buffer.prototype &&
      proto !== Uint8Array.prototype
    ) {
      const why = unfaithful(object)
      if (why !== undefined) throw new Unfaithful(why)
    }
    encodeObject(object, depth)
  }
  return encoder
}

let encoder = makeEncoder()

/** Does `value` go as a msgpack array or map (a level of nesting), rather than a scalar, binary or timestamp? */
const isContainer = (value: unknown): boolean =>
  typeof value === 'object' && value !== null && !ArrayBuffer.isView(value) && !(value instanceof Date)

/**
 * What msgpack would do wrong with `value`, or undefined if it carries it
 * as it is: a class instance goes as a plain object of its own enumerable
 * properties (documented, and what JSON does), but a Map, Set, RegExp, Error
 * or boxed primitive would lose everything it holds.
 */
function unfaithful(value: unknown): string | undefined {
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'symbol') return 'a symbol'
  if (typeof value !== 'object' || value === null) return undefined
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'an invalid Date' : undefined
  if (ArrayBuffer.isView(value)) {
    return value instanceof Uint8Array
      ? undefined
      : `a ${value.constructor.name} (only Uint8Array travels as binary; send new Uint8Array(x.buffer))`
  }
  for (const [type, name] of LOSSY) if (value instanceof type) return `${name} (msgpack would send it as an empty map)`
  return undefined
}

const LOSSY: [abstract new (...args: never[]) => unknown, string][] = [
  [Map, 'a Map'],
  [Set, 'a Set'],
  [WeakMap, 'a WeakMap'],
  [WeakSet, 'a WeakSet'],
  [RegExp, 'a RegExp'],
  [Error, 'an Error'],
  [Promise, 'a Promise'],
  [ArrayBuffer, 'an ArrayBuffer'],
  [Number, 'a Number object'],
  [String, 'a String object'],
  [Boolean, 'a Boolean object'],
]

/** Encode a value as a body; throws a TypeError naming what msgpack cannot carry faithfully, and where. */
export function encodeBody(value: unknown): Uint8Array {
  let encoded: Uint8Array
  try {
    encoded = encoder.encodeSharedRef(value)
  } catch (error) {
    throw new TypeError(`value cannot be encoded as msgpack: ${explain(value, error)}`, { cause: error })
  }
  // A copy out of the encoder's own buffer, into pooled memory rather than the V8 heap (see frames.ts dataEnvelope).
  const body = Buffer.allocUnsafe(encoded.length)
  body.set(encoded)
  const size = (encoder as unknown as EncoderInternals).view.byteLength
  if (size > KEEP_BUFFER && 4 * encoded.length <= size) encoder = makeEncoder()
  return body
}

/** Why encoding `value` failed, with the path to the value at fault. */
function explain(value: unknown, error: unknown): string {
  if (!(error instanceof Unfaithful)) {
    const found = find(value, (v, level, again) => again || (level > MAX_DEPTH && isContainer(v)))
    return `it is circular or nested too deeply${found === undefined ? '' : ` (at ${found})`}`
  }
  const found = find(value, (v) => (typeof v === 'bigint' ? v < INT64_MIN || v > UINT64_MAX : unfaithful(v) !== undefined))
  return `${error.message}${found === undefined ? '' : ` at ${found}`}`
}

/**
 * The path (as `the value.a[2]`) of the first value inside `value`, depth
 * first, for which `bad` holds, given its depth and whether it was already
 * seen on the way down (a cycle); undefined if there is none.
 */
function find(value: unknown, bad: (v: unknown, depth: number, again: boolean) => boolean): string | undefined {
  const open = new Set<unknown>()
  const path: (string | number)[] = []
  const visit = (v: unknown): boolean => {
    const again = typeof v === 'object' && v !== null && open.has(v)
    if (bad(v, path.length + 1, again)) return true
    if (again || typeof v !== 'object' || v === null || ArrayBuffer.isView(v) || v instanceof Date) return false
    open.add(v)
    const entries: [string | number, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v)
    for (const [key, child] of entries) {
      path.push(key)
      if (visit(child)) return true
      path.pop()
    }
    open.delete(v)
    return false
  }
  if (!visit(value)) return undefined
  return path.reduce<string>((s, step) => (typeof step === 'number' ? `${s}[${step}]` : `${s}.${step}`), 'the value')
}
