/**
 * The frame model: frame types, the fields each carries, PART reasons, the
 * ERROR codes a peer may send, the wire's size limits, and the encoders.
 * {@link encodeFrame} is the inverse of the decoder (`codec.ts`); tests and
 * vectors build their inputs with it. PROTOCOL.md sections 3 to 6 are the
 * normative description.
 */
import { Encoder } from '@msgpack/msgpack'

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
  CHALLENGE = 10,
  CREDIT = 11,
  CANCEL = 12,
}

/** How much a peer may have on its way to the node that announced it, beyond what that node has granted since. */
export interface Window {
  /** Messages (ZeroMQ messages holding data frames). */
  readonly messages: number
  /** Bytes (the sum of those messages' part sizes). */
  readonly bytes: number
}

/** What a JOIN carries besides its type. */
export interface Join {
  network: string
  name: string
  /** Encrypted diallers: proof that the dialler holds the secret key of `name` (PROTOCOL.md 4.2). */
  proof?: Uint8Array
  /** The name the dialler expects to reach. */
  target?: string
  /** The largest part the dialler accepts; announcing it also says the dialler reads packed parts. */
  maxPart?: number
  /** Which run of the dialler's process this is: equal bytes mean the same run. */
  incarnation?: Uint8Array
  /** The dialler's receive window; announcing it also says the dialler reads CREDIT. */
  window?: Window
  /**
   * The time a CALL of the dialler's without a `deadline` gives its callee,
   * ms; announcing it also says the dialler reads CALL deadlines and
   * metadata, CAST metadata and CANCEL (PROTOCOL.md 8.1). On the wire it is
   * the window's third element: it needs a window.
   */
  callTimeout?: number
}

/** What a STAY carries besides its type. */
export interface Stay {
  network: string
  name: string
  maxPart?: number
  incarnation?: Uint8Array
  window?: Window
  /** As in JOIN. */
  callTimeout?: number
  /** How long the acceptor lets a joined connection stay silent before it drops it (its dialler must send within it), ms: the window's fourth element. */
  stallTimeout?: number
}

export type Frame =
  | ({ type: FrameType.JOIN } & Join)
  | ({ type: FrameType.STAY } & Stay)
  /** `name`: the sender's, on a CROSS or DUPLICATE answering a JOIN that named no target (PROTOCOL.md 4.1). */
  | { type: FrameType.PART; reason: string; message: string; name?: string }
  | { type: FrameType.TICK }
  | { type: FrameType.TOCK }
  | { type: FrameType.CALL; id: number; method: string; body: Uint8Array; deadline?: number; meta?: Uint8Array }
  | { type: FrameType.CAST; method: string; body: Uint8Array; meta?: Uint8Array }
  | { type: FrameType.REPLY; id: number; body: Uint8Array }
  | {
      type: FrameType.ERROR
      id: number
      code: string
      name: string
      message: string
      remoteCode?: string
      /** The thrown error's `details`, as a body (section 7). */
      details?: Uint8Array
      /** The peers a re-thrown remote error came through, as a body holding an array of names. */
      via?: Uint8Array
    }
  | { type: FrameType.CHALLENGE; nonce: Uint8Array }
  | { type: FrameType.CREDIT; messages: number; bytes: number }
  | { type: FrameType.CANCEL; id: number }

/** Data frames: what the call layer sends and receives. */
export type DataFrame = Extract<Frame, { type: FrameType.CALL | FrameType.CAST | FrameType.REPLY | FrameType.ERROR | FrameType.CANCEL }>

/** Is `type` one of the data frames (CALL, CAST, REPLY, ERROR, CANCEL)? */
export const isData = (type: FrameType): boolean => (type >= FrameType.CALL && type <= FrameType.ERROR) || type === FrameType.CANCEL

/** PART reasons (strings on the wire, PROTOCOL.md section 5). */
export const Part = {
  CLOSE: 'CLOSE',
  CROSS: 'CROSS',
  NOT_JOINED: 'NOT_JOINED',
  NETWORK_MISMATCH: 'NETWORK_MISMATCH',
  LOOPBACK: 'LOOPBACK',
  DUPLICATE: 'DUPLICATE',
  WRONG_NAME: 'WRONG_NAME',
  VERSION: 'VERSION',
  PROTOCOL: 'PROTOCOL',
  AUTH: 'AUTH',
  /** The listener holds `maxPeers` peers already. */
  OVERLOADED: 'OVERLOADED',
  /** The connection did not join within the listener's `joinTimeout`: it will be ignored from now on. */
  TIMEOUT: 'TIMEOUT',
} as const

/** PART reasons that refuse a JOIN (reported as `peer:refused` with the reason as code). */
export const REFUSALS: ReadonlySet<string> = new Set([
  Part.NETWORK_MISMATCH,
  Part.LOOPBACK,
  Part.DUPLICATE,
  Part.WRONG_NAME,
  Part.VERSION,
  Part.PROTOCOL,
  Part.AUTH,
  Part.OVERLOADED,
  Part.TIMEOUT,
])

/** The ERROR codes a peer may send (PROTOCOL.md section 6); any other is taken as a protocol error of that peer. */
export const PEER_ERROR_CODES: ReadonlySet<string> = new Set([
  'NO_SUCH_METHOD',
  'BAD_REQUEST',
  'BAD_REPLY',
  'REMOTE',
  'OVERLOADED',
  'TOO_LARGE',
])

/** Longest node name or network, UTF-8 bytes. */
export const MAX_NAME_BYTES = 255
/** Longest method name, UTF-8 bytes. */
export const MAX_METHOD_BYTES = 1024
/** Largest message an unjoined connection may send: one part holding one JOIN. */
export const MAX_JOIN_BYTES = 2048
/** Bytes of a CHALLENGE nonce. */
export const NONCE_BYTES = 24
/** Incarnations are 8 to 32 bytes. */
export const MIN_INCARNATION = 8
export const MAX_INCARNATION = 32
/** The largest `maxPart` or window field: a uint32. */
export const MAX_UINT32 = 0xffff_ffff
/** Longest ERROR `code` or `remoteCode` a peer may send, characters. */
export const MAX_CODE_LENGTH = 64
/** Most bytes of an ERROR's encoded `details`. */
export const MAX_DETAILS_BYTES = 4096
/** Most names in an ERROR's `via`, and most bytes it encodes to. */
export const MAX_VIA = 15
export const MAX_VIA_BYTES = 4096

const encoder = new Encoder({ useBigInt64: true })
const envelope = (fields: unknown[]): Uint8Array => encoder.encode(fields)

/** Optional trailing fields: written up to the last one given, earlier absent ones as nil. */
function trailing(fields: unknown[], optional: unknown[]): unknown[] {
  let last = optional.length - 1
  while (last >= 0 && optional[last] === undefined) last--
  for (let i = 0; i <= last; i++) fields.push(optional[i] ?? null)
  return fields
}

/**
 * The window field, `[messages, bytes, callTimeout, stallTimeout]`: the
 * call terms ride in it after the window's two counts, because a listener of
 * the previous release recognises a JOIN of at most 9 elements but ignores
 * a window's elements after the second (PROTOCOL.md 4, 15). Without a window
 * there are no terms.
 */
const windowField = (w: Window | undefined, callTimeout?: number, stallTimeout?: number): unknown =>
  w === undefined ? undefined : trailing([w.messages, w.bytes], [callTimeout, stallTimeout])

export const encodeJoin = (join: Join): Uint8Array =>
  envelope(
    trailing(
      [PROTOCOL_VERSION, FrameType.JOIN, join.network, join.name],
      [join.proof, join.target, join.maxPart, join.incarnation, windowField(join.window, join.callTimeout)],
    ),
  )

export const encodeStay = (stay: Stay): Uint8Array =>
  envelope(
    trailing(
      [PROTOCOL_VERSION, FrameType.STAY, stay.network, stay.name],
      [stay.maxPart, stay.incarnation, windowField(stay.window, stay.callTimeout, stay.stallTimeout)],
    ),
  )

export const encodePart = (reason: string, message: string, name?: string): Uint8Array =>
  envelope(
    name === undefined ? [PROTOCOL_VERSION, FrameType.PART, reason, message] : [PROTOCOL_VERSION, FrameType.PART, reason, message, name],
  )
export const TICK: Uint8Array = envelope([PROTOCOL_VERSION, FrameType.TICK])
export const TOCK: Uint8Array = envelope([PROTOCOL_VERSION, FrameType.TOCK])
export const encodeChallenge = (nonce: Uint8Array): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.CHALLENGE, nonce])
export const encodeCredit = (messages: number, bytes: number): Uint8Array => envelope([PROTOCOL_VERSION, FrameType.CREDIT, messages, bytes])
export const encodeCancel = (id: number): Uint8Array =>
  isId(id) ? dataEnvelope(FrameType.CANCEL, id, undefined) : envelope([PROTOCOL_VERSION, FrameType.CANCEL, id])

/**
 * ERROR; `remoteCode` is the handler error's own string `code`, when it had
 * one; `details` its encoded `details`; `via` (encoded) the peers a re-thrown
 * remote error came through.
 */
export const encodeError = (
  id: number,
  code: string,
  name: string,
  message: string,
  remoteCode?: string,
  details?: Uint8Array,
  via?: Uint8Array,
): Uint8Array => envelope(trailing([PROTOCOL_VERSION, FrameType.ERROR, id, code, name, message], [remoteCode, details, via]))

const MAX_ID = MAX_UINT32
const isId = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= MAX_ID

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
function dataEnvelope(
  type: FrameType,
  id: number | undefined,
  method: string | undefined,
  deadline?: number,
  meta?: Uint8Array,
): Uint8Array {
  const name = method === undefined ? undefined : methodStr(method)
  // A CALL's deadline is written (as nil if absent) when metadata follows it; a CAST has no deadline.
  const slot = deadline !== undefined || (meta !== undefined && type === FrameType.CALL)
  const fields = 2 + (id === undefined ? 0 : 1) + (name === undefined ? 0 : 1) + (slot ? 1 : 0) + (meta === undefined ? 0 : 1)
  const out = Buffer.allocUnsafe(
    3 +
      (id === undefined ? 0 : uintLength(id)) +
      (name?.length ?? 0) +
      (slot ? (deadline === undefined ? 1 : uintLength(deadline)) : 0) +
      (meta === undefined ? 0 : (meta.length < 0x100 ? 2 : 3) + meta.length),
  )
  out[0] = 0x90 | fields
  out[1] = PROTOCOL_VERSION
  out[2] = type
  let at = id === undefined ? 3 : writeUint(out, 3, id)
  if (name !== undefined) at += name.copy(out, at)
  if (slot) {
    if (deadline === undefined) out[at++] = 0xc0
    else at = writeUint(out, at, deadline)
  }
  if (meta !== undefined) {
    if (meta.length < 0x100) {
      out[at] = 0xc4
      out[at + 1] = meta.length
      at += 2
    } else {
      out[at] = 0xc5
      at = out.writeUInt16BE(meta.length, at + 1)
    }
    out.set(meta, at)
  }
  return out
}

/** Metadata the byte-by-byte envelope carries: bin 8 or 16. */
const shortBin = (meta: Uint8Array | undefined): boolean => meta === undefined || meta.length < 0x10000

/**
 * CALL. `deadline`: ms the caller will wait, counted from now (absent: the
 * `callTimeout` it announced); `meta`: the call's metadata, encoded
 * (calls/meta.ts). Neither goes to a peer that announced no `callTimeout`.
 */
export function encodeCall(id: number, method: string, deadline?: number, meta?: Uint8Array): Uint8Array {
  if (shortBin(meta) && isId(id) && (deadline === undefined || isId(deadline)))
    return dataEnvelope(FrameType.CALL, id, method, deadline, meta)
  return envelope(trailing([PROTOCOL_VERSION, FrameType.CALL, id, method], [deadline, meta]))
}

/** CAST, with the cast's metadata, encoded, if it has any. */
export const encodeCast = (method: string, meta?: Uint8Array): Uint8Array =>
  shortBin(meta)
    ? dataEnvelope(FrameType.CAST, undefined, method, undefined, meta)
    : envelope([PROTOCOL_VERSION, FrameType.CAST, method, meta])
export const encodeReply = (id: number): Uint8Array =>
  isId(id) ? dataEnvelope(FrameType.REPLY, id, undefined) : envelope([PROTOCOL_VERSION, FrameType.REPLY, id])

/** The parts the reference encoders produce for `frame`: its envelope and, for CALL, CAST and REPLY, its body. */
export function encodeFrame(frame: Frame): Uint8Array[] {
  switch (frame.type) {
    case FrameType.JOIN:
      return [encodeJoin(frame)]
    case FrameType.STAY:
      return [encodeStay(frame)]
    case FrameType.PART:
      return [encodePart(frame.reason, frame.message, frame.name)]
    case FrameType.TICK:
      return [TICK]
    case FrameType.TOCK:
      return [TOCK]
    case FrameType.CALL:
      return [encodeCall(frame.id, frame.method, frame.deadline, frame.meta), frame.body]
    case FrameType.CAST:
      return [encodeCast(frame.method, frame.meta), frame.body]
    case FrameType.REPLY:
      return [encodeReply(frame.id), frame.body]
    case FrameType.ERROR:
      return [encodeError(frame.id, frame.code, frame.name, frame.message, frame.remoteCode, frame.details, frame.via)]
    case FrameType.CHALLENGE:
      return [encodeChallenge(frame.nonce)]
    case FrameType.CREDIT:
      return [encodeCredit(frame.messages, frame.bytes)]
    case FrameType.CANCEL:
      return [encodeCancel(frame.id)]
  }
}
