/**
 * How deeply a msgpack value nests, found by walking its bytes without
 * building anything. The msgpack decoder has no depth limit and, being
 * iterative, would happily allocate a million nested arrays from a few
 * megabytes of `0x91`; this walk refuses such a value first.
 */

/** Nesting our own encoder refuses to exceed (msgpack's Encoder default), so everything we send decodes. */
export const MAX_DEPTH = 100

/** What {@link valueEnd} returns for bytes that end before the value does, or are not msgpack. */
export const TRUNCATED = -1
/** What {@link valueEnd} returns for a value nested more than the limit allows. */
export const TOO_DEEP = -2

/**
 * The first value in `bytes` nests arrays and maps more than `limit` deep.
 * Truncated or invalid input is not judged here (the decoder reports it).
 */
export function tooDeep(bytes: Uint8Array, limit = MAX_DEPTH): boolean {
  // Nesting `limit` deep takes more than `limit` bytes.
  return bytes.length > limit && valueEnd(bytes, 0, limit) === TOO_DEEP
}

/**
 * Where the msgpack value starting at `at` ends (the offset just past it),
 * found from its headers alone; TOO_DEEP if it nests more than `limit` deep,
 * TRUNCATED if the bytes end first or hold a byte msgpack never uses.
 */
export function valueEnd(bytes: Uint8Array, at: number, limit = MAX_DEPTH): number {
  // Reused: this runs for every packed body, and never re-enters.
  const open = OPEN
  open.length = 0
  let pos = at
  while (pos < bytes.length) {
    const b = bytes[pos++]!
    /** Values inside this one, if it is an array or a map. */
    let children = -1
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) {
      // fixint, nil, bool: one byte
    } else if (b <= 0x8f) children = 2 * (b & 0x0f)
    else if (b <= 0x9f) children = b & 0x0f
    else if (b <= 0xbf) pos += b & 0x1f
    else {
      const n = LENGTHS[b - 0xc4]
      if (n === undefined || pos + n.size > bytes.length) return TRUNCATED
      const length =
        n.size === 0 ? 0 : n.size === 1 ? bytes[pos]! : n.size === 2 ? (bytes[pos]! << 8) | bytes[pos + 1]! : readUint32(bytes, pos)
      pos += n.size
      if (n.kind === 'bytes') pos += length + n.extra
      else if (n.kind === 'fixed') pos += n.extra
      else children = n.kind === 'map' ? 2 * length : length
    }
    if (children >= 0) {
      if (open.length >= limit) return TOO_DEEP
      if (children > 0) {
        open.push(children)
        continue
      }
    }
    // One value is complete: close every container it completes.
    while (open.length > 0) {
      const last = open.length - 1
      if (--open[last]! > 0) break
      open.pop()
    }
    if (open.length === 0) return pos <= bytes.length ? pos : TRUNCATED
  }
  return TRUNCATED
}

/** Children still to read in each open container (valueEnd's stack). */
const OPEN: number[] = []

const readUint32 = (b: Uint8Array, at: number): number => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

type Length = { size: 0 | 1 | 2 | 4; kind: 'bytes' | 'fixed' | 'array' | 'map'; extra: number }

/** Type bytes 0xc4…0xdf: how many length bytes follow, and what they count. */
const LENGTHS: (Length | undefined)[] = [
  { size: 1, kind: 'bytes', extra: 0 }, // c4 bin 8
  { size: 2, kind: 'bytes', extra: 0 }, // c5 bin 16
  { size: 4, kind: 'bytes', extra: 0 }, // c6 bin 32
  { size: 1, kind: 'bytes', extra: 1 }, // c7 ext 8 (+ type byte)
  { size: 2, kind: 'bytes', extra: 1 }, // c8 ext 16
  { size: 4, kind: 'bytes', extra: 1 }, // c9 ext 32
  { size: 0, kind: 'fixed', extra: 4 }, // ca float 32
  { size: 0, kind: 'fixed', extra: 8 }, // cb float 64
  { size: 0, kind: 'fixed', extra: 1 }, // cc uint 8
  { size: 0, kind: 'fixed', extra: 2 }, // cd uint 16
  { size: 0, kind: 'fixed', extra: 4 }, // ce uint 32
  { size: 0, kind: 'fixed', extra: 8 }, // cf uint 64
  { size: 0, kind: 'fixed', extra: 1 }, // d0 int 8
  { size: 0, kind: 'fixed', extra: 2 }, // d1 int 16
  { size: 0, kind: 'fixed', extra: 4 }, // d2 int 32
  { size: 0, kind: 'fixed', extra: 8 }, // d3 int 64
  { size: 0, kind: 'fixed', extra: 2 }, // d4 fixext 1
  { size: 0, kind: 'fixed', extra: 3 }, // d5 fixext 2
  { size: 0, kind: 'fixed', extra: 5 }, // d6 fixext 4
  { size: 0, kind: 'fixed', extra: 9 }, // d7 fixext 8
  { size: 0, kind: 'fixed', extra: 17 }, // d8 fixext 16
  { size: 1, kind: 'bytes', extra: 0 }, // d9 str 8
  { size: 2, kind: 'bytes', extra: 0 }, // da str 16
  { size: 4, kind: 'bytes', extra: 0 }, // db str 32
  { size: 2, kind: 'array', extra: 0 }, // dc array 16
  { size: 4, kind: 'array', extra: 0 }, // dd array 32
  { size: 2, kind: 'map', extra: 0 }, // de map 16
  { size: 4, kind: 'map', extra: 0 }, // df map 32
]
