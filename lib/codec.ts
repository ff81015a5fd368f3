/**
 * The wire codec: bytes in, typed frames out. No I/O, no timers, no globals
 * beyond the stateless msgpack encoder and decoder and a bounded cache of
 * encoded method names (which never changes what is written).
 *
 * A ZeroMQ message carries one or more frames. A frame is an envelope — a
 * msgpack array `[version, type, ...fields]` — followed, for CALL, CAST and
 * REPLY only, by a body: the msgpack-encoded argument or result. A part holds
 * frames back to back; an envelope that ends its part has its body in the
 * next part. PROTOCOL.md section 3 is the full description.
 */
import { Decoder, Encoder } from '@msgpack/msgpack'
import { MAX_DEPTH, TOO_DEEP, TRUNCATED, tooDeep, valueEnd } from './depth.js'

export const PROTOCOL_VERSION = 1

export enum FrameType {
  JOIN = 1,
  STAY = 2,
  PART = 3,
  TICK = 4,
  TOCK = 5,
  CALL = 6,
  CAST = 7,
  REPLY = 8,
  ERROR = 9,
}

export type Frame =
  | { type: FrameType.JOIN; network: string; name: string; proof?: Uint8Array; target?: string; maxPart?: number }
  | { type: FrameType.STAY; network: string; name: string; maxPart?: number }
  | { type: FrameType.PART; reason: string; message: string }
  | { type: FrameType.TICK }
  | { type: FrameType.TOCK }
  | { type: FrameType.CALL; id: number; method: string; body: Uint8Array }
  | { type: FrameType.CAST; method: string; body: Uint8Array }
  | { type: FrameType.REPLY; id: number; body: Uint8Array }
  | { type: FrameType.ERROR; id: number; code: string; name: string; message: string; remoteCode?: string }

/** Why a message could not be decoded. */
export class CodecError extends Error {
  readonly code: 'MALFORMED' | 'VERSION'
  constructor(code: 'MALFORMED' | 'VERSION', message: string) {
    super(message)
    this.name = 'CodecError'
    this.code = code
  }
}

/** Limits applied to every decoded envelope and body. */
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

const MAX_ID = 0xffffffff
const INT64_MIN = -(2n ** 63n)
const UINT64_MAX = 2n ** 64n - 1n
const encoder = new Encoder({ useBigInt64: true })

// msgpack writes a BigInt with DataView.setBig(U)Int64, which wraps silently:
// 2n ** 64n would go out as 0. Refuse what 64 bits cannot hold instead.
const bigints = encoder as unknown as { encodeBigInt64(value: bigint): void }
const encodeBigInt64 = bigints.encodeBigInt64.bind(encoder)
bigints.encodeBigInt64 = (value) => {
  if (value < INT64_MIN || value > UINT64_MAX) throw new RangeError(`BigInt ${value} does not fit in 64 bits`)
  encodeBigInt64(value)
}

/** Encodes and decodes frames; holds only its msgpack decoder's limits. */
export class Codec {
  private readonly decoder: Decoder
  /** Whether data envelopes may be read by the fast path; tighter array limits leave them to the general path. */
  private readonly fast: boolean
  /** The longest method name the fast path may read; longer ones take the general path, which applies the limit. */
  private readonly maxMethod: number

  constructor(limits: DecodeLimits = DEFAULT_DECODE_LIMITS) {
    this.decoder = new Decoder({ useBigInt64: true, ...limits })
    this.fast = limits.maxArrayLength >= 4
    this.maxMethod = Math.min(limits.maxStrLength, 0xff)
  }

  /** Decode one ZeroMQ message (routing id already removed) into its frames. */
  decodeMessage(parts: readonly Uint8Array[]): Frame[] {
    if (parts.length === 0) throw new CodecError('MALFORMED', 'empty message')
    const frames: Frame[] = []
    const r = new Reader(parts)
    while (r.next()) {
      frames.push(this.readDataFrame(r) ?? readFrame(this.readEnvelope(r), () => r.body()))
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
      if (head !== 0x93) return undefined
      const method = this.readMethod(r, at + 3)
      return method === undefined ? undefined : { type, method, body: r.body() }
    }
    if ((type !== FrameType.CALL || head !== 0x94) && (type !== FrameType.REPLY || head !== 0x93)) return undefined
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
    return method === undefined ? undefined : { type, id, method, body: r.body() }
  }

  /** An ASCII fixstr or str 8 at `at`, ending the envelope: moves the reader past it; else undefined. */
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

  /** Decode a body into its value; throws CodecError. */
  decodeBody(body: Uint8Array): unknown {
    if (!delimited.has(body) && tooDeep(body)) throw new CodecError('MALFORMED', `undecodable body: nested deeper than ${MAX_DEPTH}`)
    try {
      // A plain view, so binary values come back as Uint8Array, not Buffer.
      return this.decoder.decode(sharesLittle(body) ? new Uint8Array(body) : new Uint8Array(body.buffer, body.byteOffset, body.byteLength))
    } catch (error) {
      throw new CodecError('MALFORMED', `undecodable body: ${(error as Error).message}`)
    }
  }

  /** The envelope at the reader, by the general decoder: moves the reader past it; throws CodecError. */
  private readEnvelope(r: Reader): unknown[] {
    const end = valueEnd(r.part, r.at)
    if (end === TOO_DEEP) throw new CodecError('MALFORMED', `undecodable envelope: nested deeper than ${MAX_DEPTH}`)
    let value: unknown
    try {
      // Bytes that are not one whole value go to the decoder as they are, for its own account of what is wrong.
      value = this.decoder.decode(r.part.subarray(r.at, end === TRUNCATED ? r.part.length : end))
    } catch (error) {
      throw new CodecError('MALFORMED', `undecodable envelope: ${(error as Error).message}`)
    }
    r.at = end === TRUNCATED ? r.part.length : end
    if (!Array.isArray(value) || value.length < 2) throw new CodecError('MALFORMED', 'envelope is not [version, type, ...]')
    if (value[0] !== PROTOCOL_VERSION) throw new CodecError('VERSION', `unsupported protocol version ${describe(value[0])}`)
    return value
  }
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
    // Found whole, so within the nesting limit: decodeBody need not walk it again (it walks only bodies this long).
    if (end >= 0 && body.length > MAX_DEPTH) delimited.add(body)
    return body
  }
}

/** Packed bodies whose end valueEnd found, and with it that they nest no deeper than MAX_DEPTH. */
const delimited = new WeakSet<Uint8Array>()

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
      const proof = e[4]
      if (proof instanceof Uint8Array) frame.proof = proof
      else if (proof !== undefined && proof !== null) throw new CodecError('MALFORMED', 'field 4 (proof) must be binary or nil')
      if (e[5] !== undefined && e[5] !== null) frame.target = str(e, 5)
      if (e[6] !== undefined && e[6] !== null) frame.maxPart = uint32(e, 6, 'a part size (uint32)')
      return frame
    }
    case FrameType.STAY: {
      const frame: Frame = { type, network: str(e, 2), name: str(e, 3) }
      if (e[4] !== undefined && e[4] !== null) frame.maxPart = uint32(e, 4, 'a part size (uint32)')
      return frame
    }
    case FrameType.PART:
      return { type, reason: str(e, 2), message: str(e, 3) }
    case FrameType.TICK:
    case FrameType.TOCK:
      return { type }
    case FrameType.CALL:
      return { type, id: id(e, 2), method: str(e, 3), body: body() }
    case FrameType.CAST:
      return { type, method: str(e, 2), body: body() }
    case FrameType.REPLY:
      return { type, id: id(e, 2), body: body() }
    case FrameType.ERROR: {
      const frame: Frame = { type, id: id(e, 2), code: str(e, 3), name: str(e, 4), message: str(e, 5) }
      if (e[6] !== undefined && e[6] !== null) frame.remoteCode = str(e, 6)
      return frame
    }
    default:
      throw new CodecError('MALFORMED', `unknown frame type ${describe(type)}`)
  }
}

/** A peer-supplied value in an error message; never calls into the value (a map may carry a `toString` key). */
function describe(v: unknown): string {
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) return String(v)
  return Array.isArray(v) ? 'an array' : v instanceof Uint8Array ? 'binary' : 'a map'
}

function str(e: unknown[], i: number): string {
  const v = e[i]
  if (typeof v !== 'string') throw new CodecError('MALFORMED', `field ${i} must be a string`)
  return v
}

const id = (e: unknown[], i: number): number => uint32(e, i, 'a call id (uint32)')

function uint32(e: unknown[], i: number, what: string): number {
  const v = e[i]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ID) throw new CodecError('MALFORMED', `field ${i} must be ${what}`)
  return v
}

/** Encode a value as a body; throws TypeError naming what msgpack cannot carry. */
export function encodeBody(value: unknown): Uint8Array {
  let encoded: Uint8Array
  try {
    encoded = encoder.encodeSharedRef(value)
  } catch (error) {
    const why = (error as Error).message.startsWith('Too deep') ? 'it is circular or nested too deeply' : (error as Error).message
    throw new TypeError(`value cannot be encoded as msgpack: ${why}`, { cause: error })
  }
  // A copy out of the encoder's own buffer, into pooled memory rather than the V8 heap (see dataEnvelope).
  const body = Buffer.allocUnsafe(encoded.length)
  body.set(encoded)
  return body
}

const envelope = (fields: unknown[]): Uint8Array => encoder.encode(fields)

/**
 * Method names as msgpack `str` bytes, header included: a program calls few
 * methods, many times. Bounded: cleared when full, and long names are not kept.
 */
const methodBytes = new Map<string, Buffer>()
const METHOD_CACHE_SIZE = 1024

function methodStr(method: string): Buffer {
  let bytes = methodBytes.get(method)
  if (bytes === undefined) {
    bytes = Buffer.from(encoder.encode(method))
    if (bytes.length > 256) return bytes
    if (methodBytes.size >= METHOD_CACHE_SIZE) methodBytes.clear()
    methodBytes.set(method, bytes)
  }
  return bytes
}

const uintLength = (n: number): number => (n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5)
const isId = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= MAX_ID

/** A msgpack unsigned integer in its shortest form at `at`; returns where it ends. */
function writeUint(out: Buffer, at: number, n: number): number {
  if (n < 0x80) {
    out[at] = n
    return at + 1
  }
  if (n < 0x100) {
    out[at] = 0xcc
    out[at + 1] = n
    return at + 2
  }
  if (n < 0x10000) {
    out[at] = 0xcd
    return out.writeUInt16BE(n, at + 1)
  }
  out[at] = 0xce
  return out.writeUInt32BE(n, at + 1)
}

/**
 * The data envelopes, written byte by byte: the same bytes the msgpack
 * encoder writes (fixarray, positive fixint version and type, shortest uint
 * id, str method), in pooled memory, since a small typed array of the V8
 * heap must be moved off it before ZeroMQ can read it.
 */
function dataEnvelope(type: FrameType, id: number | undefined, method: string | undefined): Uint8Array {
  const name = method === undefined ? undefined : methodStr(method)
  const fields = 2 + (id === undefined ? 0 : 1) + (name === undefined ? 0 : 1)
  const out = Buffer.allocUnsafe(3 + (id === undefined ? 0 : uintLength(id)) + (name?.length ?? 0))
  out[0] = 0x90 | fields
  out[1] = PROTOCOL_VERSION
  out[2] = type
  const at = id === undefined ? 3 : writeUint(out, 3, id)
  name?.copy(out, at)
  return out
}

/**
 * JOIN. Optional trailing fields: `proof` (encrypted nodes), `target` (the
 * name the dialler expects to reach) and `maxPart` (the largest part the
 * dialler accepts, which also says it reads packed parts).
 */
export function encodeJoin(network: string, name: string, proof?: Uint8Array, target?: string, maxPart?: number): Uint8Array {
  const fields: unknown[] = [PROTOCOL_VERSION, FrameType.JOIN, network, name]
  if (proof !== undefined || target !== undefined || maxPart !== undefined) fields.push(proof ?? null)
  if (target !== undefined || maxPart !== undefined) fields.push(target ?? null)
  if (maxPart !== undefined) fields.push(maxPart)
  return envelope(fields)
}
/** STAY; `maxPart`, optional, as in JOIN. */
export const encodeStay = (network: string, name: string, maxPart?: number): Uint8Array =>
  envelope(
    maxPart === undefined ? [PROTOCOL_VERSION, FrameType.STAY, network, name] : [PROTOCOL_VERSION, FrameType.STAY, network, name, maxPart],
  )
export const encodePart = (reason: string, message: string): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.PART, reason, message])
export const TICK: Uint8Array = envelope([PROTOCOL_VERSION, FrameType.TICK])
export const TOCK: Uint8Array = envelope([PROTOCOL_VERSION, FrameType.TOCK])
export const encodeCall = (id: number, method: string): Uint8Array =>
  isId(id) ? dataEnvelope(FrameType.CALL, id, method) : envelope([PROTOCOL_VERSION, FrameType.CALL, id, method])
export const encodeCast = (method: string): Uint8Array => dataEnvelope(FrameType.CAST, undefined, method)
export const encodeReply = (id: number): Uint8Array =>
  isId(id) ? dataEnvelope(FrameType.REPLY, id, undefined) : envelope([PROTOCOL_VERSION, FrameType.REPLY, id])
/** ERROR; `remoteCode` is the handler error's own string `code`, when it had one. */
export const encodeError = (id: number, code: string, name: string, message: string, remoteCode?: string): Uint8Array =>
  envelope(
    remoteCode === undefined
      ? [PROTOCOL_VERSION, FrameType.ERROR, id, code, name, message]
      : [PROTOCOL_VERSION, FrameType.ERROR, id, code, name, message, remoteCode],
  )

/**
 * A body up to this size travels in its envelope's part: copying it there
 * costs less than a part of its own (which zeromq.js either copies anyway,
 * up to 128 bytes, or pins and releases from another thread). A larger body
 * gets its own part and is never copied.
 */
export const INLINE_BODY = 16 * 1024

/**
 * The parts of one message carrying `frames` (each an envelope and, for
 * CALL, CAST and REPLY, a body), in order. Frames share a part, each body
 * right after its envelope, while the part stays within `limit` bytes; an
 * envelope whose body cannot join it (empty, over INLINE_BODY, or over
 * `limit`) ends its part, and the body follows as a part of its own.
 */
export function packFrames(frames: readonly (readonly Uint8Array[])[], limit: number): Uint8Array[] {
  const parts: Uint8Array[] = []
  let run: Uint8Array[] = []
  let bytes = 0
  const close = (): void => {
    if (run.length === 1) parts.push(run[0]!)
    else if (run.length > 1) parts.push(Buffer.concat(run, bytes))
    run = []
    bytes = 0
  }
  for (let i = 0; i < frames.length; i++) {
    const envelope = frames[i]![0]!
    const body = frames[i]![1]
    const inline = body !== undefined && body.length > 0 && body.length <= INLINE_BODY && envelope.length + body.length <= limit
    if (bytes + envelope.length + (inline ? body.length : 0) > limit) close()
    run.push(envelope)
    bytes += envelope.length
    if (inline) {
      run.push(body)
      bytes += body.length
    } else if (body !== undefined) {
      close()
      parts.push(body)
    }
  }
  close()
  return parts
}
