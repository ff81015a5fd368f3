/**
 * The wire codec: bytes in, typed frames out. No I/O, no timers, no globals
 * beyond the stateless msgpack encoder and decoder and a bounded cache of
 * encoded method names (which never changes what is written).
 *
 * A ZeroMQ message carries one or more frames. A frame is an envelope part —
 * a msgpack array `[version, type, ...fields]` — followed, for CALL, CAST and
 * REPLY only, by a body part holding the msgpack-encoded argument or result.
 * PROTOCOL.md is the full description.
 */
import { Decoder, Encoder } from '@msgpack/msgpack'
import { MAX_DEPTH, tooDeep } from './depth.js'

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
  | { type: FrameType.JOIN; network: string; name: string; proof?: Uint8Array; target?: string }
  | { type: FrameType.STAY; network: string; name: string }
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
    let i = 0
    while (i < parts.length) {
      const part = parts[i++]!
      const body = parts[i]
      const data = body === undefined ? undefined : this.readDataFrame(part, body)
      if (data !== undefined) {
        frames.push(data)
        i++
        continue
      }
      const frame = readFrame(this.decodeEnvelope(part), () => {
        const body = parts[i++]
        if (body === undefined) throw new CodecError('MALFORMED', 'missing body part')
        return body
      })
      frames.push(frame)
    }
    return frames
  }

  /**
   * CALL, CAST and REPLY envelopes in the exact form the reference writes
   * (section 3.1: shortest integers, a method name of at most 255 ASCII
   * bytes), read straight from the bytes. These carry nearly all traffic;
   * anything else, including every malformed envelope, returns undefined and
   * takes the general path, so both paths accept and reject the same bytes.
   */
  private readDataFrame(e: Uint8Array, body: Uint8Array): Frame | undefined {
    if (!this.fast || e.length < 4 || e[1] !== PROTOCOL_VERSION) return undefined
    const head = e[0]
    const type = e[2]
    if (type === FrameType.CAST) {
      if (head !== 0x93) return undefined
      const method = this.readMethod(e, 3)
      return method === undefined ? undefined : { type, method, body }
    }
    if ((type !== FrameType.CALL || head !== 0x94) && (type !== FrameType.REPLY || head !== 0x93)) return undefined
    const b = e[3]!
    const end = b < 0x80 ? 4 : b === 0xcc ? 5 : b === 0xcd ? 6 : b === 0xce ? 8 : 0
    if (end === 0 || e.length < end) return undefined
    const id =
      end === 4 ? b : end === 5 ? e[4]! : end === 6 ? (e[4]! << 8) | e[5]! : ((e[4]! << 24) | (e[5]! << 16) | (e[6]! << 8) | e[7]!) >>> 0
    if (type === FrameType.REPLY) return e.length === end ? { type, id, body } : undefined
    const method = this.readMethod(e, end)
    return method === undefined ? undefined : { type, id, method, body }
  }

  /** An ASCII fixstr or str 8 that ends the envelope at `at`, else undefined. */
  private readMethod(e: Uint8Array, at: number): string | undefined {
    const b = e[at]
    let start: number
    if (b !== undefined && b >= 0xa0 && b <= 0xbf) start = at + 1
    else if (b === 0xd9) start = at + 2
    else return undefined
    const length = b === 0xd9 ? e[at + 1] : b - 0xa0
    if (length === undefined || length > this.maxMethod || start + length !== e.length) return undefined
    for (let i = start; i < e.length; i++) if (e[i]! >= 0x80) return undefined
    return Buffer.isBuffer(e) ? e.toString('latin1', start, e.length) : String.fromCharCode(...e.subarray(start))
  }

  /** Decode a body part into its value; throws CodecError. */
  decodeBody(body: Uint8Array): unknown {
    if (tooDeep(body)) throw new CodecError('MALFORMED', `undecodable body: nested deeper than ${MAX_DEPTH}`)
    try {
      // A plain view, so binary values come back as Uint8Array, not Buffer.
      return this.decoder.decode(Buffer.isBuffer(body) ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) : body)
    } catch (error) {
      throw new CodecError('MALFORMED', `undecodable body: ${(error as Error).message}`)
    }
  }

  private decodeEnvelope(part: Uint8Array): unknown[] {
    let value: unknown
    if (tooDeep(part)) throw new CodecError('MALFORMED', `undecodable envelope: nested deeper than ${MAX_DEPTH}`)
    try {
      value = this.decoder.decode(part)
    } catch (error) {
      throw new CodecError('MALFORMED', `undecodable envelope: ${(error as Error).message}`)
    }
    if (!Array.isArray(value) || value.length < 2) throw new CodecError('MALFORMED', 'envelope is not [version, type, ...]')
    if (value[0] !== PROTOCOL_VERSION) throw new CodecError('VERSION', `unsupported protocol version ${describe(value[0])}`)
    return value
  }
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
      return frame
    }
    case FrameType.STAY:
      return { type, network: str(e, 2), name: str(e, 3) }
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

function id(e: unknown[], i: number): number {
  const v = e[i]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ID) {
    throw new CodecError('MALFORMED', `field ${i} must be a call id (uint32)`)
  }
  return v
}

/** Encode a value as a body part; throws TypeError naming what msgpack cannot carry. */
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

/** JOIN; `proof` (encrypted nodes) and `target` (the name the dialler expects to reach) are optional trailing fields. */
export function encodeJoin(network: string, name: string, proof?: Uint8Array, target?: string): Uint8Array {
  const fields: unknown[] = [PROTOCOL_VERSION, FrameType.JOIN, network, name]
  if (proof !== undefined || target !== undefined) fields.push(proof ?? null)
  if (target !== undefined) fields.push(target)
  return envelope(fields)
}
export const encodeStay = (network: string, name: string): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.STAY, network, name])
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
