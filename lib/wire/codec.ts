/**
 * The wire decoder: bytes in, typed frames out. No I/O, no timers, no state
 * beyond its msgpack decoders and their limits.
 *
 * A ZeroMQ message carries one or more frames. A frame is an envelope — a
 * msgpack array `[version, type, ...fields]` — followed, for CALL, CAST and
 * REPLY only, by a body: the msgpack-encoded argument or result. A part holds
 * frames back to back; an envelope that ends its part has its body in the
 * next part. PROTOCOL.md section 3 is the full description.
 *
 * Envelopes are small: they are decoded under limits a few times larger
 * than any envelope a peer needs to send, so no envelope can make the node
 * build more than a few strings. Bodies are decoded only on request, after
 * the call they belong to has been admitted, and only if their walk shows
 * they fit {@link HEAP_PER_BYTE}.
 */
import { Decoder } from '@msgpack/msgpack'
import {
  FrameType,
  MAX_DETAILS_BYTES,
  MAX_INCARNATION,
  MAX_JOIN_BYTES,
  MAX_UINT32,
  MAX_VIA_BYTES,
  MIN_INCARNATION,
  NONCE_BYTES,
  PROTOCOL_VERSION,
  type Frame,
  type Join,
  type Window,
} from './frames.js'
import { COST_SLACK, HEAP_PER_BYTE, MAX_DEPTH, TOO_DEEP, TRUNCATED, affordable, lastCost, valueEnd } from './walk.js'

/** Why a message or body could not be decoded. */
export class CodecError extends Error {
  readonly code: 'MALFORMED' | 'VERSION'
  constructor(code: 'MALFORMED' | 'VERSION', message: string) {
    super(message)
    this.name = 'CodecError'
    this.code = code
  }
}

/** Limits applied to every decoded body. */
export interface DecodeLimits {
  maxStrLength: number
  maxBinLength: number
  maxArrayLength: number
  maxMapLength: number
  maxExtLength: number
}

export const DEFAULT_DECODE_LIMITS: DecodeLimits = {
  maxStrLength: 16 * 1024 * 1024,
  maxBinLength: 16 * 1024 * 1024,
  maxArrayLength: 1024 * 1024,
  maxMapLength: 1024 * 1024,
  maxExtLength: 16 * 1024 * 1024,
}

/**
 * Limits of every envelope: the longest string an envelope needs is an
 * ERROR message (16 384 characters from the reference), the longest binary
 * a call's metadata (64 KiB at most, 8 KiB by default); the most elements, a
 * JOIN's nine. Maps and extensions never occur. Nesting: the JOIN window is
 * an array in the array.
 */
export const ENVELOPE_LIMITS = {
  maxStrLength: 64 * 1024,
  maxBinLength: 64 * 1024,
  maxArrayLength: 16,
  maxMapLength: 0,
  maxExtLength: 0,
} satisfies DecodeLimits
const ENVELOPE_DEPTH = 2
/** The longest binary field of an envelope besides metadata (a proof, an incarnation, a nonce), bytes. */
const MAX_SMALL_BIN = 1024

const envelopeDecoder = new Decoder({ useBigInt64: true, ...ENVELOPE_LIMITS })

/** Decodes messages and bodies; holds only its body decoder's limits. */
export class Codec {
  private readonly decoder: Decoder
  /** Whether data envelopes may be read by the fast path; tighter array limits leave them to the general path. */
  private readonly fast: boolean
  /** The longest method name the fast path may read; longer ones take the general path, which applies the limit. */
  private readonly maxMethod = 0xff

  constructor(limits: DecodeLimits = DEFAULT_DECODE_LIMITS) {
    this.decoder = new Decoder({ useBigInt64: true, ...limits })
    this.fast = limits.maxArrayLength >= 4
  }

  /** Decode one ZeroMQ message (routing id already removed) into its frames. */
  decodeMessage(parts: readonly Uint8Array[]): Frame[] {
    if (parts.length === 0) throw new CodecError('MALFORMED', 'empty message')
    const frames: Frame[] = []
    const r = new Reader(parts)
    while (r.next()) {
      frames.push(this.readDataFrame(r) ?? readFrame(readEnvelope(r), () => r.body()))
    }
    return frames
  }

  /**
   * CALL, CAST and REPLY envelopes in the exact form the reference writes
   * (section 3.1: shortest integers, a method name of at most 255 ASCII
   * bytes), read straight from the bytes, with their bodies. These carry
   * nearly all traffic; anything else, including every malformed envelope,
   * returns undefined without moving the reader and takes the general path,
   * so both paths accept and reject the same bytes.
   */
  private readDataFrame(r: Reader): Frame | undefined {
    const e = r.part
    const at = r.at
    if (!this.fast || e.length < at + 4 || e[at + 1] !== PROTOCOL_VERSION) return undefined
    const head = e[at]
    const type = e[at + 2]
    if (type === FrameType.CAST) {
      if (head !== 0x93 && head !== 0x94) return undefined
      const method = this.readMethod(r, at + 3)
      if (method === undefined) return undefined
      if (head === 0x93) return { type, method, body: r.body() }
      const meta = readBin(e, r.at)
      if (meta === undefined) return this.rewind(r, at)
      r.at = meta.end
      return { type, method, meta: meta.value, body: r.body() }
    }
    if ((type !== FrameType.CALL || head < 0x94 || head > 0x96) && (type !== FrameType.REPLY || head !== 0x93)) return undefined
    const b = e[at + 3]!
    const size = b < 0x80 ? 1 : b === 0xcc ? 2 : b === 0xcd ? 3 : b === 0xce ? 5 : 0
    const end = at + 3 + size
    if (size === 0 || e.length < end) return undefined
    const i = at + 4
    const id =
      size === 1
        ? b
        : size === 2
          ? e[i]!
          : size === 3
            ? (e[i]! << 8) | e[i + 1]!
            : ((e[i]! << 24) | (e[i + 1]! << 16) | (e[i + 2]! << 8) | e[i + 3]!) >>> 0
    if (type === FrameType.REPLY) {
      r.at = end
      return { type, id, body: r.body() }
    }
    const method = this.readMethod(r, end)
    if (method === undefined) return undefined
    if (head === 0x94) return { type, id, method, body: r.body() }
    // A deadline after the method (a uint, or nil before metadata), then the metadata as bin 8 or 16.
    const nil = head === 0x96 && e[r.at] === 0xc0
    const d = nil ? { value: undefined, end: r.at + 1 } : readShortUint(e, r.at)
    if (d === undefined) return this.rewind(r, at)
    if (head === 0x95) {
      r.at = d.end
      return { type, id, method, deadline: d.value, body: r.body() }
    }
    const meta = readBin(e, d.end)
    if (meta === undefined) return this.rewind(r, at)
    r.at = meta.end
    const frame: Frame = { type, id, method, body: EMPTY, meta: meta.value }
    if (d.value !== undefined) frame.deadline = d.value
    frame.body = r.body()
    return frame
  }

  /** Leave an envelope the fast path began to read to the general path. */
  private rewind(r: Reader, at: number): undefined {
    r.at = at
    return undefined
  }

  /** An ASCII fixstr or str 8 at `at`: moves the reader past it; else undefined. */
  private readMethod(r: Reader, at: number): string | undefined {
    const e = r.part
    const b = e[at]
    let start: number
    if (b !== undefined && b >= 0xa0 && b <= 0xbf) start = at + 1
    else if (b === 0xd9) start = at + 2
    else return undefined
    const length = b === 0xd9 ? e[at + 1] : b - 0xa0
    const end = start + (length ?? 0)
    if (length === undefined || length > this.maxMethod || end > e.length) return undefined
    for (let i = start; i < end; i++) if (e[i]! >= 0x80) return undefined
    r.at = end
    return Buffer.isBuffer(e) ? e.toString('latin1', start, end) : String.fromCharCode(...e.subarray(start, end))
  }

  /**
   * Decode a body into its value; throws CodecError. A body nested more than
   * {@link MAX_DEPTH} deep, or whose walk estimates more than
   * {@link HEAP_PER_BYTE} bytes of heap per byte, is refused unbuilt.
   */
  decodeBody(body: Uint8Array): unknown {
    // Short bodies can neither nest too deep nor cost more than COST_SLACK: they are not walked.
    if (body.length > MAX_DEPTH) {
      let cost = measured.get(body)
      if (cost === undefined) {
        const end = valueEnd(body, 0)
        if (end === TOO_DEEP) throw new CodecError('MALFORMED', `undecodable body: nested deeper than ${MAX_DEPTH}`)
        // A body that is not one whole value is left to the decoder, which says what is wrong with it.
        cost = end === TRUNCATED ? 0 : lastCost
      }
      if (!affordable(cost, body.length)) {
        throw new CodecError(
          'MALFORMED',
          `undecodable body: it would take about ${cost} bytes of heap to build from ${body.length} (the limit is ${HEAP_PER_BYTE} a byte, plus ${COST_SLACK})`,
        )
      }
    }
    try {
      // A plain view, so binary values come back as Uint8Array, not Buffer.
      return this.decoder.decode(sharesLittle(body) ? new Uint8Array(body) : new Uint8Array(body.buffer, body.byteOffset, body.byteLength))
    } catch (error) {
      throw new CodecError('MALFORMED', `undecodable body: ${(error as Error).message}`)
    }
  }
}

/** A msgpack positive fixint, uint 8, uint 16 or uint 32 at `at`, and where it ends; else undefined. */
/** A bin 8 or bin 16 at `at` (as the reference writes metadata), or undefined. Not copied: it is decoded before the message goes. */
function readBin(e: Uint8Array, at: number): { value: Uint8Array; end: number } | undefined {
  const b = e[at]
  const head = b === 0xc4 ? 2 : b === 0xc5 ? 3 : 0
  if (head === 0 || e.length < at + head) return undefined
  const length = head === 2 ? e[at + 1]! : (e[at + 1]! << 8) | e[at + 2]!
  const end = at + head + length
  // A plain Uint8Array view, as the general path gives, whether the part is a Buffer or not.
  return e.length < end ? undefined : { value: new Uint8Array(e.buffer, e.byteOffset + at + head, length), end }
}

function readShortUint(e: Uint8Array, at: number): { value: number; end: number } | undefined {
  const b = e[at]
  if (b === undefined) return undefined
  if (b < 0x80) return { value: b, end: at + 1 }
  const size = b === 0xcc ? 1 : b === 0xcd ? 2 : b === 0xce ? 4 : 0
  if (size === 0 || e.length < at + 1 + size) return undefined
  let value = 0
  for (let i = 1; i <= size; i++) value = value * 256 + e[at + i]!
  return { value, end: at + 1 + size }
}

/**
 * The JOIN of a connection that has not joined, or undefined if `parts` is
 * not a message holding a single JOIN in a single part of at most
 * {@link MAX_JOIN_BYTES}. Only such a message is decoded at all; a JOIN
 * followed by anything else in the same message is not a JOIN message.
 * Throws CodecError for a JOIN that is malformed or of another version.
 */
export function decodeJoin(parts: readonly Uint8Array[]): Join | undefined {
  const part = parts[0]
  if (parts.length !== 1 || part === undefined || part.length > MAX_JOIN_BYTES || part.length < 4) return undefined
  // fixarray of 4 to 15 elements (later releases may add trailing fields), then the version and type JOIN, each a positive fixint.
  if (part[0]! < 0x94 || part[0]! > 0x9f || part[1]! > 0x7f || part[2] !== FrameType.JOIN) return undefined
  if (part[1] !== PROTOCOL_VERSION) throw new CodecError('VERSION', `unsupported protocol version ${part[1]}`)
  const r = new Reader(parts)
  r.next()
  const frame = readFrame(readEnvelope(r), () => r.body())
  if (r.at !== part.length) return undefined
  return frame as Join
}

/**
 * The version and frame type a message from an unjoined connection starts
 * with, read from its first three bytes alone (a fixarray header, then two
 * positive fixints), or undefined if it does not start like an envelope the
 * reference writes. Nothing is decoded.
 */
export function peek(parts: readonly Uint8Array[]): { version: number; type: number } | undefined {
  const part = parts[0]
  if (part === undefined || part.length < 3) return undefined
  const head = part[0]!
  if (head < 0x92 || head > 0x9f || part[1]! > 0x7f || part[2]! > 0x7f) return undefined
  return { version: part[1]!, type: part[2]! }
}

/** Is this message a PART (by {@link peek}, nothing decoded)? A peer that sends one is leaving. */
export const isPart = (parts: readonly Uint8Array[]): boolean => peek(parts)?.type === FrameType.PART

/** The envelope at the reader, decoded under {@link ENVELOPE_LIMITS}: moves the reader past it; throws CodecError. */
function readEnvelope(r: Reader): unknown[] {
  const end = valueEnd(r.part, r.at, ENVELOPE_DEPTH)
  if (end === TOO_DEEP) throw new CodecError('MALFORMED', 'undecodable envelope: nested too deeply')
  let value: unknown
  try {
    // Bytes that are not one whole value go to the decoder as they are, for its own account of what is wrong.
    value = envelopeDecoder.decode(r.part.subarray(r.at, end === TRUNCATED ? r.part.length : end))
  } catch (error) {
    throw new CodecError('MALFORMED', `undecodable envelope: ${(error as Error).message}`)
  }
  r.at = end === TRUNCATED ? r.part.length : end
  if (!Array.isArray(value) || value.length < 2) throw new CodecError('MALFORMED', 'envelope is not [version, type, ...]')
  if (value[0] !== PROTOCOL_VERSION) throw new CodecError('VERSION', `unsupported protocol version ${describe(value[0])}`)
  return value
}

/**
 * A cursor over one message's parts. A part holds one or more frames back to
 * back; a frame's body follows its envelope in the same part, unless the
 * envelope ends the part, in which case the body is the whole next part.
 */
class Reader {
  part: Uint8Array = EMPTY
  /** Where the next value in `part` starts. */
  at = 0
  private i = 0

  constructor(private readonly parts: readonly Uint8Array[]) {}

  /** Is there another frame? Moves to the next part when this one is used up. */
  next(): boolean {
    if (this.at < this.part.length) return true
    const part = this.parts[this.i++]
    if (part === undefined) return false
    if (part.length === 0) throw new CodecError('MALFORMED', 'empty part')
    this.part = part
    this.at = 0
    return true
  }

  /** The body of the frame whose envelope was just read. */
  body(): Uint8Array {
    const { part, at } = this
    if (at === part.length) {
      const body = this.parts[this.i++]
      if (body === undefined) throw new CodecError('MALFORMED', 'missing body part')
      this.part = EMPTY
      this.at = 0
      return body
    }
    // A body that cannot be delimited takes the rest of the part, and fails when it is decoded.
    const end = valueEnd(part, at)
    this.at = end < 0 ? part.length : end
    const body = part.subarray(at, this.at)
    // Found whole, so within the nesting limit, and its cost is known: decodeBody need not walk it again.
    if (end >= 0 && body.length > MAX_DEPTH) measured.set(body, lastCost)
    return body
  }
}

/** Packed bodies whose end valueEnd found (so they nest no deeper than MAX_DEPTH), with their heap estimate. */
const measured = new WeakMap<Uint8Array, number>()

const EMPTY = new Uint8Array(0)

/**
 * A body packed in a much larger part, which may hold a binary or extension
 * value. msgpack returns those as views of the bytes it decodes, so a small
 * one kept by the application would keep the whole message alive; such a
 * body is decoded from a copy of its own.
 */
function sharesLittle(body: Uint8Array): boolean {
  if (body.buffer.byteLength < 2 * body.byteLength + 1024) return false
  for (let i = 0; i < body.length; i++) {
    const b = body[i]!
    if ((b >= 0xc4 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8)) return true
  }
  return false
}

function readFrame(e: unknown[], body: () => Uint8Array): Frame {
  const type = e[1]
  switch (type) {
    case FrameType.JOIN: {
      const frame: Frame = { type, network: str(e, 2), name: str(e, 3) }
      if (given(e, 4)) frame.proof = bin(e, 4, 'the proof')
      if (given(e, 5)) frame.target = str(e, 5)
      if (given(e, 6)) frame.maxPart = uint32(e, 6, 'a part size (uint32)')
      if (given(e, 7)) frame.incarnation = incarnation(e, 7)
      if (given(e, 8)) window(e, 8, frame)
      return frame
    }
    case FrameType.STAY: {
      const frame: Frame = { type, network: str(e, 2), name: str(e, 3) }
      if (given(e, 4)) frame.maxPart = uint32(e, 4, 'a part size (uint32)')
      if (given(e, 5)) frame.incarnation = incarnation(e, 5)
      if (given(e, 6)) window(e, 6, frame)
      return frame
    }
    case FrameType.PART: {
      const frame: Frame = { type, reason: str(e, 2), message: str(e, 3) }
      if (given(e, 4)) frame.name = str(e, 4)
      return frame
    }
    case FrameType.TICK:
    case FrameType.TOCK:
      return { type }
    case FrameType.CALL: {
      const frame: Frame = { type, id: id(e, 2), method: str(e, 3), body: EMPTY }
      if (given(e, 4)) frame.deadline = uint32(e, 4, 'a deadline in ms (uint32)')
      if (given(e, 5)) frame.meta = bin(e, 5, 'the metadata', Infinity)
      frame.body = body()
      return frame
    }
    case FrameType.CAST: {
      const frame: Frame = { type, method: str(e, 2), body: EMPTY }
      if (given(e, 3)) frame.meta = bin(e, 3, 'the metadata', Infinity)
      frame.body = body()
      return frame
    }
    case FrameType.CANCEL:
      return { type, id: id(e, 2) }
    case FrameType.REPLY:
      return { type, id: id(e, 2), body: body() }
    case FrameType.ERROR: {
      const frame: Frame = { type, id: id(e, 2), code: str(e, 3), name: str(e, 4), message: str(e, 5) }
      if (given(e, 6)) frame.remoteCode = str(e, 6)
      if (given(e, 7)) frame.details = bin(e, 7, 'the details', MAX_DETAILS_BYTES)
      if (given(e, 8)) frame.via = bin(e, 8, 'the path', MAX_VIA_BYTES)
      return frame
    }
    case FrameType.CHALLENGE: {
      const nonce = bin(e, 2, 'the nonce')
      if (nonce.length !== NONCE_BYTES) throw new CodecError('MALFORMED', `field 2 (the nonce) must be ${NONCE_BYTES} bytes`)
      return { type, nonce }
    }
    case FrameType.CREDIT:
      return { type, messages: uint32(e, 2, 'a message count (uint32)'), bytes: uint32(e, 3, 'a byte count (uint32)') }
    default:
      throw new CodecError('MALFORMED', `unknown frame type ${describe(type)}`)
  }
}

/** Is optional field `i` present (not missing, not nil)? */
const given = (e: unknown[], i: number): boolean => e[i] !== undefined && e[i] !== null

/** A peer-supplied value in an error message; never calls into the value (a map may carry a `toString` key). */
function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 32 ? `${v.slice(0, 32)}…` : v)
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return String(v)
  return Array.isArray(v) ? 'an array' : v instanceof Uint8Array ? 'binary' : 'a map'
}

function str(e: unknown[], i: number): string {
  const v = e[i]
  if (typeof v !== 'string') throw new CodecError('MALFORMED', `field ${i} must be a string`)
  return v
}

function bin(e: unknown[], i: number, what: string, max = MAX_SMALL_BIN): Uint8Array {
  const v = e[i]
  if (!(v instanceof Uint8Array)) throw new CodecError('MALFORMED', `field ${i} (${what}) must be binary or nil`)
  if (v.length > max) throw new CodecError('MALFORMED', `field ${i} (${what}) is ${v.length} bytes, more than ${max}`)
  // A copy: the envelope's bytes belong to a message that may be large.
  return new Uint8Array(v)
}

function incarnation(e: unknown[], i: number): Uint8Array {
  const v = bin(e, i, 'the incarnation')
  if (v.length < MIN_INCARNATION || v.length > MAX_INCARNATION) {
    throw new CodecError('MALFORMED', `field ${i} (the incarnation) must be ${MIN_INCARNATION} to ${MAX_INCARNATION} bytes`)
  }
  return v
}

/** The window field of a JOIN or STAY, `[messages, bytes, callTimeout?, stallTimeout?]`, into `frame`. */
function window(e: unknown[], i: number, frame: { window?: Window; callTimeout?: number; stallTimeout?: number }): void {
  const v = e[i]
  if (!Array.isArray(v) || v.length < 2) throw new CodecError('MALFORMED', `field ${i} (the window) must be [messages, bytes]`)
  const messages = uint32(v, 0, 'a message count (uint32)')
  const bytes = uint32(v, 1, 'a byte count (uint32)')
  if (messages === 0 || bytes === 0)
    throw new CodecError('MALFORMED', `field ${i} (the window) must allow at least one message and one byte`)
  frame.window = { messages, bytes }
  if (given(v, 2)) frame.callTimeout = duration(v, 2, 'callTimeout')
  // Only a STAY's is read: a dialler's acceptor-side timing means nothing to a listener.
  if (given(v, 3) && e[1] === FrameType.STAY) frame.stallTimeout = duration(v, 3, 'stallTimeout')
}

const id = (e: unknown[], i: number): number => uint32(e, i, 'a call id (uint32)')

/** A time in ms announced in JOIN or STAY: a uint32 of at least 1. */
function duration(e: unknown[], i: number, what: string): number {
  const v = uint32(e, i, `${what} in ms (uint32)`)
  if (v === 0) throw new CodecError('MALFORMED', `field ${i} (${what}) must be at least 1 ms`)
  return v
}

function uint32(e: unknown[], i: number, what: string): number {
  const v = e[i]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_UINT32)
    throw new CodecError('MALFORMED', `field ${i} must be ${what}`)
  return v
}
