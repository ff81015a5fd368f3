/**
 * Walks a msgpack value's headers without building anything: where it ends,
 * how deeply it nests, and an upper bound of the heap decoding it would
 * take. The msgpack decoder has no depth limit and counts entries per
 * container, not objects built: a few megabytes of `0x91` would become a
 * million nested arrays, and a megabyte of `0x80` a million objects (64 MB).
 * This walk refuses such values first.
 */

/** Nesting our own encoder refuses to exceed (msgpack's Encoder default), so everything we send decodes. */
export const MAX_DEPTH = 100

/** What {@link valueEnd} returns for bytes that end before the value does, or are not msgpack. */
export const TRUNCATED = -1
/** What {@link valueEnd} returns for a value nested more than the limit allows. */
export const TOO_DEEP = -2

/**
 * Bytes of V8 heap, at most, that decoding a body may take per byte of the
 * body (plus {@link COST_SLACK}). A body whose estimate exceeds it is refused
 * before it is decoded. Measured on Node 20: arrays of `{a: 1}` cost 16 bytes
 * a byte, of `[1, 2]` 24, of `{}` 64, of empty binaries 52; the first two
 * decode, the last two are refused.
 */
export const HEAP_PER_BYTE = 24
/** Heap any body may take regardless of its size, bytes. */
export const COST_SLACK = 16 * 1024

/** The heap estimate of the last {@link valueEnd} walk, bytes (an upper bound, from the costs measured per type). */
export let lastCost = 0

/**
 * Where the msgpack value starting at `at` ends (the offset just past it),
 * found from its headers alone; TOO_DEEP if it nests more than `limit` deep,
 * TRUNCATED if the bytes end first or hold a byte msgpack never uses. Sets
 * {@link lastCost}.
 */
export function valueEnd(bytes: Uint8Array, at: number, limit = MAX_DEPTH): number {
  // Typed stacks, reused: this runs for every packed body, and never re-enters.
  const open = OPEN
  const maps = IS_MAP
  const depthLimit = Math.min(limit, STACK - 1)
  let depth = 0
  let cost = 0
  let pos = at
  while (pos < bytes.length) {
    // A map key that is an array index (0, "17"…): V8 stores those as elements, sized by the largest.
    if (depth > 0 && maps[depth - 1] === 1 && open[depth - 1]! % 2 === 0) {
      const index = indexKey(bytes, pos)
      if (index >= 0) {
        const top = depth - 1
        INDEX_COUNT[top]++
        if (index > INDEX_MAX[top]!) INDEX_MAX[top] = index
      }
    }
    const b = bytes[pos++]!
    /** Values inside this one, if it is an array or a map. */
    let children = -1
    let map = 0
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
      // fixint, nil, bool: one byte, nothing allocated
    } else if (b <= 0x8f) {
      children = 2 * (b & 0x0f)
      map = 1
      cost += MAP + MAP_ENTRY * (b & 0x0f)
    } else if (b <= 0x9f) {
      children = b & 0x0f
      cost += ARRAY + SLOT * children
    } else if (b <= 0xbf) {
      const length = b & 0x1f
      pos += length
      if (length > 1) cost += STRING + 2 * length
    } else {
      const n = LENGTHS[b - 0xc4]
      if (n === undefined || pos + n.size > bytes.length) return TRUNCATED
      const length =
        n.size === 0 ? 0 : n.size === 1 ? bytes[pos]! : n.size === 2 ? (bytes[pos]! << 8) | bytes[pos + 1]! : readUint32(bytes, pos)
      pos += n.size
      if (n.kind === 'bytes') {
        pos += length + n.extra
        cost += n.cost + (n.cost === STRING ? 2 * length : 0)
      } else if (n.kind === 'fixed') {
        pos += n.extra
        cost += n.cost
      } else if (n.kind === 'map') {
        children = 2 * length
        map = 1
        cost += MAP + MAP_ENTRY * length
      } else {
        children = length
        cost += ARRAY + SLOT * length
      }
    }
    if (children >= 0) {
      if (depth >= depthLimit) return TOO_DEEP
      if (children > 0) {
        open[depth] = children
        maps[depth] = map
        INDEX_MAX[depth] = -1
        INDEX_COUNT[depth] = 0
        depth++
        continue
      }
    }
    // One value is complete: close every container it completes.
    while (depth > 0) {
      const last = depth - 1
      if (--open[last]! > 0) break
      depth--
      if (INDEX_COUNT[last]! > 0) cost += elementsCost(INDEX_MAX[last]!, INDEX_COUNT[last]!)
    }
    if (depth === 0) {
      lastCost = cost
      return pos <= bytes.length ? pos : TRUNCATED
    }
  }
  return TRUNCATED
}

/** Does decoding a body whose walk estimated `cost` stay within {@link HEAP_PER_BYTE}? */
export const affordable = (cost: number, size: number): boolean => cost <= HEAP_PER_BYTE * size + COST_SLACK

/**
 * The first value in `bytes` nests arrays and maps more than `limit` deep.
 * Truncated or invalid input is not judged here (the decoder reports it).
 */
export function tooDeep(bytes: Uint8Array, limit = MAX_DEPTH): boolean {
  // Nesting `limit` deep takes more than `limit` bytes.
  return bytes.length > limit && valueEnd(bytes, 0, limit) === TOO_DEEP
}

// Upper bounds of what the decoder allocates per value, bytes of V8 heap (Node 20, 64-bit, pointer compression off).
/** An array: its JSArray and its elements' header. */
const ARRAY = 48
/** Each element slot of an array. */
const SLOT = 8
/** A map: a plain object with room for a few properties. */
const MAP = 64
/** Each entry of a map (in dictionary mode beyond a few). */
const MAP_ENTRY = 24
/** A string of two or more characters (plus two bytes per character). */
const STRING = 24
/** A Uint8Array view (bin). */
const BINARY = 112
/** An extension value (a Date for timestamps, else an ExtData holding a Uint8Array). */
const EXTENSION = 152
/** A heap number or BigInt (float, 32- and 64-bit integers beyond the small-integer range). */
const NUMBER = 24

/**
 * valueEnd's stacks, one slot per open container: children still to read
 * (up to 2³³ for a map), whether it is a map, and its index keys' largest
 * and count.
 */
const STACK = 1024
const OPEN = new Float64Array(STACK)
const IS_MAP = new Uint8Array(STACK)
const INDEX_MAX = new Float64Array(STACK)
const INDEX_COUNT = new Float64Array(STACK)

/** The largest array index V8 keeps as an element (2³² − 2). */
const MAX_INDEX = 0xffff_fffe

/**
 * The array index a map key at `at` spells, or -1: an unsigned integer, or a
 * string of decimal digits in canonical form ("0", "17", not "017").
 */
function indexKey(bytes: Uint8Array, at: number): number {
  const b = bytes[at]
  if (b === undefined) return -1
  if (b <= 0x7f) return b
  if (b === 0xcc) return bytes[at + 1] ?? -1
  if (b === 0xcd) return at + 2 < bytes.length ? (bytes[at + 1]! << 8) | bytes[at + 2]! : -1
  if (b === 0xce) {
    if (at + 4 >= bytes.length) return -1
    const n = readUint32(bytes, at + 1)
    return n <= MAX_INDEX ? n : -1
  }
  let start: number
  let length: number
  if (b >= 0xa1 && b <= 0xaa) {
    start = at + 1
    length = b & 0x1f
  } else if (b === 0xd9 && (bytes[at + 1] ?? 0) >= 1 && (bytes[at + 1] ?? 11) <= 10) {
    start = at + 2
    length = bytes[at + 1]!
  } else return -1
  if (start + length > bytes.length || (length > 1 && bytes[start] === 0x30)) return -1
  let n = 0
  for (let i = start; i < start + length; i++) {
    const d = bytes[i]! - 0x30
    if (d < 0 || d > 9) return -1
    n = n * 10 + d
  }
  return n <= MAX_INDEX ? n : -1
}

/**
 * Heap of a map's index keys. Up to an index of about 1024 V8 keeps them in a
 * flat array of about 1.5 × the largest plus 17 slots; beyond, in a
 * dictionary of about 48 bytes an entry (measured on Node 20).
 */
const elementsCost = (max: number, count: number): number => (max <= 1024 ? 8 * Math.ceil(1.5 * max + 17) + 16 : 176 + 48 * count)

const readUint32 = (b: Uint8Array, at: number): number => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

type Length = { size: 0 | 1 | 2 | 4; kind: 'bytes' | 'fixed' | 'array' | 'map'; extra: number; cost: number }

/** Type bytes 0xc4…0xdf: how many length bytes follow, what they count, and what the value costs to build. */
const LENGTHS: (Length | undefined)[] = [
  { size: 1, kind: 'bytes', extra: 0, cost: BINARY }, // c4 bin 8
  { size: 2, kind: 'bytes', extra: 0, cost: BINARY }, // c5 bin 16
  { size: 4, kind: 'bytes', extra: 0, cost: BINARY }, // c6 bin 32
  { size: 1, kind: 'bytes', extra: 1, cost: EXTENSION }, // c7 ext 8 (+ type byte)
  { size: 2, kind: 'bytes', extra: 1, cost: EXTENSION }, // c8 ext 16
  { size: 4, kind: 'bytes', extra: 1, cost: EXTENSION }, // c9 ext 32
  { size: 0, kind: 'fixed', extra: 4, cost: NUMBER }, // ca float 32
  { size: 0, kind: 'fixed', extra: 8, cost: NUMBER }, // cb float 64
  { size: 0, kind: 'fixed', extra: 1, cost: 0 }, // cc uint 8
  { size: 0, kind: 'fixed', extra: 2, cost: 0 }, // cd uint 16
  { size: 0, kind: 'fixed', extra: 4, cost: NUMBER }, // ce uint 32
  { size: 0, kind: 'fixed', extra: 8, cost: NUMBER }, // cf uint 64
  { size: 0, kind: 'fixed', extra: 1, cost: 0 }, // d0 int 8
  { size: 0, kind: 'fixed', extra: 2, cost: 0 }, // d1 int 16
  { size: 0, kind: 'fixed', extra: 4, cost: NUMBER }, // d2 int 32
  { size: 0, kind: 'fixed', extra: 8, cost: NUMBER }, // d3 int 64
  { size: 0, kind: 'fixed', extra: 2, cost: EXTENSION }, // d4 fixext 1
  { size: 0, kind: 'fixed', extra: 3, cost: EXTENSION }, // d5 fixext 2
  { size: 0, kind: 'fixed', extra: 5, cost: EXTENSION }, // d6 fixext 4
  { size: 0, kind: 'fixed', extra: 9, cost: EXTENSION }, // d7 fixext 8
  { size: 0, kind: 'fixed', extra: 17, cost: EXTENSION }, // d8 fixext 16
  { size: 1, kind: 'bytes', extra: 0, cost: STRING }, // d9 str 8
  { size: 2, kind: 'bytes', extra: 0, cost: STRING }, // da str 16
  { size: 4, kind: 'bytes', extra: 0, cost: STRING }, // db str 32
  { size: 2, kind: 'array', extra: 0, cost: ARRAY }, // dc array 16
  { size: 4, kind: 'array', extra: 0, cost: ARRAY }, // dd array 32
  { size: 2, kind: 'map', extra: 0, cost: MAP }, // de map 16
  { size: 4, kind: 'map', extra: 0, cost: MAP }, // df map 32
]
