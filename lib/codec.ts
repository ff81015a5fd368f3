/**
 * The wire codec: bytes in, typed frames out. No I/O, no timers, no globals
 * beyond the stateless msgpack encoder and decoder.
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

  constructor(limits: DecodeLimits = DEFAULT_DECODE_LIMITS) {
    this.decoder = new Decoder({ useBigInt64: true, ...limits })
  }

  /** Decode one ZeroMQ message (routing id already removed) into its frames. */
  decodeMessage(parts: readonly Uint8Array[]): Frame[] {
    if (parts.length === 0) throw new CodecError('MALFORMED', 'empty message')
    const frames: Frame[] = []
    let i = 0
    while (i < parts.length) {
      const envelope = this.decodeEnvelope(parts[i++]!)
      const frame = readFrame(envelope, () => {
        const body = parts[i++]
        if (body === undefined) throw new CodecError('MALFORMED', 'missing body part')
        return body
      })
      frames.push(frame)
    }
    return frames
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
  try {
    return encoder.encode(value)
  } catch (error) {
    const why = (error as Error).message.startsWith('Too deep') ? 'it is circular or nested too deeply' : (error as Error).message
    throw new TypeError(`value cannot be encoded as msgpack: ${why}`, { cause: error })
  }
}

const envelope = (fields: unknown[]): Uint8Array => encoder.encode(fields)

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
export const encodeCall = (id: number, method: string): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.CALL, id, method])
export const encodeCast = (method: string): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.CAST, method])
export const encodeReply = (id: number): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.REPLY, id])
/** ERROR; `remoteCode` is the handler error's own string `code`, when it had one. */
export const encodeError = (id: number, code: string, name: string, message: string, remoteCode?: string): Uint8Array =>
  envelope(
    remoteCode === undefined
      ? [PROTOCOL_VERSION, FrameType.ERROR, id, code, name, message]
      : [PROTOCOL_VERSION, FrameType.ERROR, id, code, name, message, remoteCode],
  )
