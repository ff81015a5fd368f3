import { readFileSync } from 'node:fs'
import { ExtData, decode, encode } from '@msgpack/msgpack'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Codec, CodecError, ENVELOPE_LIMITS } from '../lib/wire/codec.js'
import {
  FrameType,
  PROTOCOL_VERSION,
  TICK,
  TOCK,
  encodeCall,
  encodeCast,
  encodeFrame,
  encodeJoin,
  encodePart,
  encodeReply,
  encodeStay,
  type Frame,
} from '../lib/wire/frames.js'
import { encodeBody } from '../lib/wire/body.js'
import { INLINE_BODY, packFrames } from '../lib/wire/pack.js'
import { DEFAULT_MAX_MESSAGE_SIZE } from '../lib/options.js'

// --- fixed vectors (spec/vectors/*.json; format described in PROTOCOL.md) ---

/** A frame as written in the vectors: like {@link Frame}, with any body as hex. */
type JsonFrame = { type: FrameType; body?: string; [field: string]: unknown }

interface FrameVector {
  name: string
  /** The parts of one ZeroMQ message (routing id already removed), as hex. */
  parts: string[]
  /** What decodeMessage returns, when it succeeds. */
  frames?: JsonFrame[]
  /** True when encoding `frames` with the reference encoders, packed as a reference node packs a batch, gives exactly `parts`. */
  canonical?: boolean
  /** The CodecError code decodeMessage throws, when it fails. */
  error?: 'MALFORMED' | 'VERSION'
}

interface BodyVector {
  name: string
  hex: string
  /** JSON, with {"$bigint": "decimal"}, {"$date": ms} and {"$bin": "hex"} for the types JSON lacks. */
  value?: unknown
  canonical?: boolean
  error?: 'MALFORMED'
}

const load = <T>(file: string): T[] => JSON.parse(readFileSync(new URL(`./vectors/${file}`, import.meta.url), 'utf8')) as T[]
const frameVectors = load<FrameVector>('frames.json')
const bodyVectors = load<BodyVector>('bodies.json')

const bytes = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'))
const hex = (data: Uint8Array): string => Buffer.from(data).toString('hex')

/** Fields that hold bytes, written as hex in the vectors. */
const BINARY_FIELDS = new Set(['body', 'proof', 'incarnation', 'nonce', 'meta', 'details', 'via'])
const fromJson = (frame: JsonFrame): Frame =>
  Object.fromEntries(Object.entries(frame).map(([k, v]) => [k, BINARY_FIELDS.has(k) && typeof v === 'string' ? bytes(v) : v])) as Frame
const toJson = (frame: Frame): JsonFrame =>
  Object.fromEntries(Object.entries(frame).map(([k, v]) => [k, v instanceof Uint8Array ? hex(v) : v])) as JsonFrame

function untag(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(untag)
  if (value === null || typeof value !== 'object') return value
  if ('$bigint' in value) return BigInt(value.$bigint as string)
  if ('$date' in value) return new Date(value.$date as number)
  if ('$bin' in value) return bytes(value.$bin as string)
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, untag(v)]))
}

/** Run `fn` and return the error it throws (failing the test if it does not throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    return error
  }
  throw new Error('expected an error, none was thrown')
}

const codec = new Codec()

describe('frame vectors', () => {
  it('cover every frame type, encoded and decoded', () => {
    const types = new Set(frameVectors.filter((v) => v.canonical).flatMap((v) => v.frames!.map((f) => f.type)))
    expect([...types].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
  })

  for (const v of frameVectors.filter((v) => v.frames !== undefined)) {
    it(`${v.name}: the parts decode to the expected frames`, () => {
      expect(codec.decodeMessage(v.parts.map(bytes)).map(toJson)).toEqual(v.frames)
    })
  }

  for (const v of frameVectors.filter((v) => v.canonical)) {
    it(`${v.name}: the frames encode to exactly the expected parts`, () => {
      expect(packFrames(v.frames!.map(fromJson).map(encodeFrame), DEFAULT_MAX_MESSAGE_SIZE).map(hex)).toEqual(v.parts)
    })
  }

  for (const v of frameVectors.filter((v) => v.error !== undefined)) {
    it(`${v.name}: decoding fails with CodecError ${v.error}`, () => {
      const error = thrown(() => codec.decodeMessage(v.parts.map(bytes)))
      expect(error).toBeInstanceOf(CodecError)
      expect(error).toMatchObject({ name: 'CodecError', code: v.error })
    })
  }
})

describe('body vectors', () => {
  for (const v of bodyVectors.filter((v) => v.error === undefined)) {
    it(`${v.name}: the body decodes to the expected value`, () => {
      expect(codec.decodeBody(bytes(v.hex))).toEqual(untag(v.value))
    })
  }

  for (const v of bodyVectors.filter((v) => v.canonical)) {
    it(`${v.name}: the value encodes to exactly the expected body`, () => {
      expect(hex(encodeBody(untag(v.value)))).toBe(v.hex)
    })
  }

  for (const v of bodyVectors.filter((v) => v.error !== undefined)) {
    it(`${v.name}: decoding the body fails with CodecError ${v.error}`, () => {
      const error = thrown(() => codec.decodeBody(bytes(v.hex)))
      expect(error).toBeInstanceOf(CodecError)
      expect(error).toMatchObject({ code: v.error })
    })
  }
})

// --- behaviours, one per test ---

describe('envelopes', () => {
  it('every envelope starts with protocol version 1', () => {
    expect(PROTOCOL_VERSION).toBe(1)
    for (const part of [
      encodeJoin({ network: 'n', name: 'a' }),
      encodeStay({ network: 'n', name: 'a' }),
      encodePart('CLOSE', ''),
      TICK,
      TOCK,
      encodeCall(1, 'A.B'),
    ]) {
      expect(part[1]).toBe(0x01)
    }
  })

  it('a message may batch several frames, each with its own body part', () => {
    const parts = [TICK, encodeCall(1, 'A.B'), encodeBody(1), encodeCast('C.D'), encodeBody(2), encodeReply(3), encodeBody(3), TOCK]
    expect(codec.decodeMessage(parts).map((f) => f.type)).toEqual([
      FrameType.TICK,
      FrameType.CALL,
      FrameType.CAST,
      FrameType.REPLY,
      FrameType.TOCK,
    ])
  })

  it('a part may hold several frames, each body right after its envelope', () => {
    const frames = [
      [TICK],
      [encodeCall(1, 'A.B'), encodeBody({ A: 1 })],
      [encodeCast('C.D'), encodeBody('x')],
      [encodeReply(3), encodeBody([3])],
    ]
    const parts = packFrames(frames, DEFAULT_MAX_MESSAGE_SIZE)
    expect(parts).toHaveLength(1)
    const decoded = codec.decodeMessage(parts)
    expect(decoded.map((f) => f.type)).toEqual([FrameType.TICK, FrameType.CALL, FrameType.CAST, FrameType.REPLY])
    expect(decoded.map((f) => ('body' in f ? codec.decodeBody(f.body) : undefined))).toEqual([undefined, { A: 1 }, 'x', [3]])
  })

  it('a body over INLINE_BODY gets a part of its own, uncopied, after an envelope that ends its part', () => {
    const big = encodeBody(new Uint8Array(INLINE_BODY + 1))
    const parts = packFrames([[TICK], [encodeCall(1, 'A.B'), big], [encodeReply(2), encodeBody(2)]], DEFAULT_MAX_MESSAGE_SIZE)
    expect(parts).toHaveLength(3)
    expect(parts[1]).toBe(big)
    expect(codec.decodeMessage(parts).map((f) => f.type)).toEqual([FrameType.TICK, FrameType.CALL, FrameType.REPLY])
  })

  it('no part packs more than the limit, so a peer with the same maxMessageSize accepts every part', () => {
    const frames = Array.from({ length: 40 }, (_, i) => [encodeReply(i), encodeBody('x'.repeat(90))])
    const parts = packFrames(frames, 1024)
    expect(parts.length).toBeGreaterThan(1)
    for (const part of parts) expect(part.length).toBeLessThanOrEqual(1024)
    expect(codec.decodeMessage(parts)).toHaveLength(40)
  })

  it('a small binary value decoded from a body packed in a large part does not keep the part alive', () => {
    const frames = Array.from({ length: 200 }, (_, i) => [encodeReply(i), encodeBody({ i, tag: new Uint8Array([1, 2, 3, 4]) })])
    const [part] = packFrames(frames, DEFAULT_MAX_MESSAGE_SIZE)
    const [first] = codec.decodeMessage([part!])
    const value = codec.decodeBody((first as { body: Uint8Array }).body) as { tag: Uint8Array }
    expect(value.tag).toEqual(new Uint8Array([1, 2, 3, 4]))
    expect(value.tag.buffer.byteLength).toBeLessThan(part!.length / 10)
  })

  it('a body part is returned as is, without being decoded', () => {
    const body = bytes('c1c1c1')
    const [frame] = codec.decodeMessage([encodeCall(9, 'A.B'), body])
    expect(frame).toEqual({ type: FrameType.CALL, id: 9, method: 'A.B', body })
  })

  it('a truncated envelope is MALFORMED', () => {
    const join = encodeJoin({ network: 'net one', name: 'alpha' })
    for (let cut = 0; cut < join.length; cut++) {
      expect(thrown(() => codec.decodeMessage([join.subarray(0, cut)]))).toMatchObject({ name: 'CodecError', code: 'MALFORMED' })
    }
  })

  it('an envelope that is not an array is MALFORMED', () => {
    for (const value of [{ v: 1, t: 4 }, 'TICK', 4, null, true, new Uint8Array([1, 4])]) {
      expect(thrown(() => codec.decodeMessage([encodeBody(value)]))).toMatchObject({ name: 'CodecError', code: 'MALFORMED' })
    }
  })

  it('an envelope of another protocol version fails with CodecError VERSION', () => {
    const error = thrown(() => codec.decodeMessage([encodeBody([2, FrameType.TICK])]))
    expect(error).toBeInstanceOf(CodecError)
    expect(error).toMatchObject({ code: 'VERSION', message: 'unsupported protocol version 2' })
  })

  it('an unknown frame type rejects the whole message, including the frames before it', () => {
    const parts = [encodeCall(1, 'A.B'), encodeBody(null), encodeBody([1, 42])]
    expect(thrown(() => codec.decodeMessage(parts))).toMatchObject({ code: 'MALFORMED', message: 'unknown frame type 42' })
  })

  it('a CALL, CAST or REPLY without its body part is MALFORMED', () => {
    for (const envelope of [encodeCall(1, 'A.B'), encodeCast('A.B'), encodeReply(1)]) {
      expect(thrown(() => codec.decodeMessage([envelope]))).toMatchObject({ code: 'MALFORMED', message: 'missing body part' })
    }
  })

  it('a message without any part is MALFORMED', () => {
    expect(thrown(() => codec.decodeMessage([]))).toMatchObject({ code: 'MALFORMED' })
  })

  it('decoding a Buffer gives the same frames as decoding a Uint8Array', () => {
    const parts = [encodeJoin({ network: 'net', name: 'x' }), encodeReply(4), encodeBody('r')]
    expect(codec.decodeMessage(parts.map((p) => Buffer.from(p))).map(toJson)).toEqual(codec.decodeMessage(parts).map(toJson))
  })

  it('an envelope above the envelope limits is MALFORMED, whatever the body limits: no envelope builds more than a few small values', () => {
    const generous = new Codec()
    for (const fields of [
      [1, FrameType.PART, 'x'.repeat(ENVELOPE_LIMITS.maxStrLength + 1), ''],
      [1, FrameType.JOIN, 'net', 'a', new Uint8Array(ENVELOPE_LIMITS.maxBinLength + 1)],
      [1, FrameType.TICK, ...Array(ENVELOPE_LIMITS.maxArrayLength).fill(0)],
      [1, FrameType.PART, { a: 1 }, ''],
      [1, FrameType.STAY, 'net', 'b', 1, new Uint8Array(8), [[1, 1]]],
    ]) {
      expect(thrown(() => generous.decodeMessage([encode(fields)]))).toMatchObject({ code: 'MALFORMED' })
    }
    // At the limits they decode.
    expect(generous.decodeMessage([encode([1, FrameType.PART, 'x'.repeat(ENVELOPE_LIMITS.maxStrLength), ''])])).toHaveLength(1)
  })

  it('a body above any decode limit (string, binary, array, map) is MALFORMED; one at the limit decodes', () => {
    const small = new Codec({ maxStrLength: 8, maxBinLength: 8, maxArrayLength: 8, maxMapLength: 8, maxExtLength: 8 })
    const map = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]))
    for (const [atLimit, over] of [
      ['x'.repeat(8), 'x'.repeat(9)],
      [new Uint8Array(8), new Uint8Array(9)],
      [Array(8).fill(0), Array(9).fill(0)],
      [map(8), map(9)],
    ]) {
      expect(small.decodeBody(encodeBody(atLimit))).toEqual(atLimit)
      expect(thrown(() => small.decodeBody(encodeBody(over)))).toMatchObject({ code: 'MALFORMED' })
    }
  })
})

describe('hostile envelope values', () => {
  // Found by the fast-check property below: String() on a map with a `toString` key throws a TypeError.
  it('a map with a toString key as version or type is a CodecError, not a TypeError', () => {
    for (const fields of [
      [{ toString: 'String' }, 1],
      [1, { toString: 'x', valueOf: 'y' }],
    ]) {
      expect(() => new Codec().decodeMessage([encodeBody(fields)])).toThrow(CodecError)
    }
  })
})

describe('bodies', () => {
  it('a garbage body decodes with CodecError MALFORMED', () => {
    const [frame] = codec.decodeMessage([encodeCall(1, 'A.B'), bytes('c1ff00')])
    const error = thrown(() => codec.decodeBody((frame as { body: Uint8Array }).body))
    expect(error).toBeInstanceOf(CodecError)
    expect(error).toMatchObject({ code: 'MALFORMED' })
  })

  it('a body map with a __proto__ key fails with CodecError and changes no prototype', () => {
    // {"__proto__": {"polluted": true}}, and the same one level down.
    for (const body of ['81a95f5f70726f746f5f5f81a8706f6c6c75746564c3', '81a16181a95f5f70726f746f5f5f81a8706f6c6c75746564c3']) {
      const error = thrown(() => codec.decodeBody(bytes(body)))
      expect(error).toBeInstanceOf(CodecError)
      expect(({} as Record<string, unknown>).polluted).toBeUndefined()
      expect(Object.prototype).not.toHaveProperty('polluted')
    }
  })

  it('BigInt, Date, Uint8Array and nested objects round-trip through encodeBody and decodeBody', () => {
    const value = {
      big: 2n ** 63n - 1n,
      neg: -(2n ** 63n),
      unsigned: 2n ** 64n - 1n,
      when: new Date(1_700_000_000_123),
      before1970: new Date(-86_400_001),
      bin: new Uint8Array([0, 1, 254, 255]),
      nested: { list: [1, 'two', [3, { four: true, five: null }]], float: 1.5, large: 2 ** 40 },
    }
    expect(codec.decodeBody(encodeBody(value))).toEqual(value)
  })

  it('binary values decoded from a Buffer come back as plain Uint8Array', () => {
    const value = codec.decodeBody(Buffer.from(encodeBody(new Uint8Array([1, 2, 3]))))
    expect(Object.getPrototypeOf(value)).toBe(Uint8Array.prototype)
  })

  it('undefined is encoded as nil', () => {
    expect(hex(encodeBody(undefined))).toBe('c0')
  })

  it('encodeBody of a function throws a TypeError', () => {
    expect(() => encodeBody(() => 1)).toThrow(TypeError)
  })

  it('encodeBody of an object holding a function throws a TypeError', () => {
    expect(() => encodeBody({ f: () => 1 })).toThrow(TypeError)
  })

  it('encodeBody of a circular object throws a TypeError that says so', () => {
    const circular: Record<string, unknown> = {}
    circular.self = circular
    expect(() => encodeBody(circular)).toThrow(
      new TypeError('value cannot be encoded as msgpack: it is circular or nested too deeply (at the value.self)'),
    )
  })

  it('encodeBody of a BigInt wider than 64 bits throws a TypeError instead of wrapping', () => {
    expect(() => encodeBody(2n ** 64n)).toThrow(TypeError)
    expect(() => encodeBody({ deep: [-(2n ** 63n) - 1n] })).toThrow(TypeError)
    expect(() => encodeBody(2n ** 64n - 1n)).not.toThrow()
    expect(() => encodeBody(-(2n ** 63n))).not.toThrow()
  })
})

// --- properties ---

const text = fc.string({ unit: 'binary', maxLength: 40 })
const callId = fc.integer({ min: 0, max: 0xffffffff })
const body = fc.uint8Array({ maxLength: 64 })
const incarnation = fc.uint8Array({ minLength: 8, maxLength: 32 })
const window = fc.record({ messages: fc.integer({ min: 1, max: 0xffffffff }), bytes: fc.integer({ min: 1, max: 0xffffffff }) })

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record(
    {
      type: fc.constant(FrameType.JOIN as const),
      network: text,
      name: text,
      proof: fc.uint8Array({ maxLength: 200 }),
      target: text,
      maxPart: callId,
      incarnation,
      window,
    },
    { requiredKeys: ['type', 'network', 'name'] },
  ),
  fc.record(
    { type: fc.constant(FrameType.STAY as const), network: text, name: text, maxPart: callId, incarnation, window },
    { requiredKeys: ['type', 'network', 'name'] },
  ),
  fc.record({ type: fc.constant(FrameType.PART as const), reason: text, message: text }),
  fc.record({ type: fc.constant(FrameType.TICK as const) }),
  fc.record({ type: fc.constant(FrameType.TOCK as const) }),
  fc.record({ type: fc.constant(FrameType.CALL as const), id: callId, method: text, body }),
  fc.record({ type: fc.constant(FrameType.CAST as const), method: text, body }),
  fc.record({ type: fc.constant(FrameType.REPLY as const), id: callId, body }),
  fc.record({ type: fc.constant(FrameType.ERROR as const), id: callId, code: text, name: text, message: text }),
  fc.record({ type: fc.constant(FrameType.CHALLENGE as const), nonce: fc.uint8Array({ minLength: 24, maxLength: 24 }) }),
  fc.record({ type: fc.constant(FrameType.CREDIT as const), messages: callId, bytes: callId }),
)

/** Frames whose bodies are msgpack values, as a node sends them (a packed body is found by reading it). */
const packableArb: fc.Arbitrary<Frame> = fc
  .tuple(frameArb, fc.jsonValue({ maxDepth: 2 }))
  .map(([frame, value]) => ('body' in frame ? { ...frame, body: encodeBody(value) } : frame))

/** decodeMessage either returns frames or throws a CodecError; anything else fails the property. */
function decodesOrCodecError(parts: Uint8Array[]): void {
  try {
    const frames = codec.decodeMessage(parts)
    expect(frames.length).toBeGreaterThan(0)
  } catch (error) {
    if (!(error instanceof CodecError)) throw error
    expect(['MALFORMED', 'VERSION']).toContain(error.code)
  }
}

/** Msgpack values of every kind, to build envelopes that are arrays but not necessarily valid. */
const msgpackValue = fc.oneof(
  text,
  fc.integer(),
  fc.integer({ min: -1, max: 12 }),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.uint8Array({ maxLength: 8 }),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  fc.date({ noInvalidDate: true }),
  fc.dictionary(text, fc.integer(), { maxKeys: 3 }),
)

describe('properties', () => {
  it('decoding an encoded frame gives back the same frame', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        expect(codec.decodeMessage(encodeFrame(frame))).toEqual([frame])
      }),
    )
  })

  it('decoding a batch of encoded frames gives back the same frames in order', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), (frames) => {
        expect(codec.decodeMessage(frames.flatMap(encodeFrame))).toEqual(frames)
      }),
    )
  })

  it('frames packed into parts, at any part limit, decode to the same frames in order', () => {
    fc.assert(
      fc.property(fc.array(packableArb, { minLength: 1, maxLength: 8 }), fc.integer({ min: 8, max: 300 }), (frames, limit) => {
        const encoded = frames.map(encodeFrame)
        const parts = packFrames(encoded, limit)
        expect(codec.decodeMessage(parts)).toEqual(frames)
        // A part over the limit is a single envelope or body that is itself over it.
        const single = new Set(encoded.flat())
        for (const part of parts) if (part.length > limit) expect(single.has(part)).toBe(true)
      }),
    )
  })

  it('decodeMessage of a packed message with bytes cut, flipped or appended returns frames or throws CodecError', () => {
    const damaged = fc
      .tuple(fc.array(packableArb, { minLength: 1, maxLength: 4 }), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(2))
      .map(([frames, at, byte, how]) => {
        const [part] = packFrames(frames.map(encodeFrame), DEFAULT_MAX_MESSAGE_SIZE).map((p) => Uint8Array.from(p))
        const j = at % part!.length
        if (how === 0) return [part!.subarray(0, j)]
        if (how === 1) part![j] = byte
        return [Uint8Array.from([...part!, byte])]
      })
    fc.assert(fc.property(damaged, decodesOrCodecError), { numRuns: 2000 })
  })

  it('decodeMessage of arbitrary bytes returns frames or throws CodecError, never another error', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 48 }), { maxLength: 5 }), decodesOrCodecError), { numRuns: 2000 })
  })

  it('decodeMessage of arbitrary arrays as envelopes returns frames or throws CodecError, never another error', () => {
    const envelope = fc
      .tuple(
        fc.oneof(fc.constant(1), msgpackValue),
        fc.oneof(fc.integer({ min: 0, max: 12 }), msgpackValue),
        fc.array(msgpackValue, { maxLength: 5 }),
      )
      .map(([version, type, rest]) => encodeBody([version, type, ...rest]))
    const part = fc.oneof(envelope, fc.uint8Array({ maxLength: 16 }))
    fc.assert(fc.property(fc.array(part, { maxLength: 5 }), decodesOrCodecError), { numRuns: 2000 })
  })

  it('decodeMessage of a valid message with bytes cut, flipped or appended returns frames or throws CodecError', () => {
    const damaged = fc
      .tuple(fc.array(frameArb, { minLength: 1, maxLength: 3 }), fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(3))
      .map(([frames, which, at, byte, how]) => {
        const parts = frames.flatMap(encodeFrame).map((p) => Uint8Array.from(p))
        const i = which % parts.length
        const p = parts[i]!
        const j = p.length === 0 ? 0 : at % p.length
        if (how === 0) parts[i] = p.subarray(0, j)
        else if (how === 1 && p.length > 0) p[j] = byte
        else if (how === 2) parts[i] = Uint8Array.from([...p, byte])
        else parts.splice(i, 1)
        return parts
      })
    fc.assert(fc.property(damaged, decodesOrCodecError), { numRuns: 2000 })
  })

  it('CALL, CAST and REPLY envelopes are byte for byte what the msgpack encoder writes', () => {
    fc.assert(
      fc.property(callId, text, (id, method) => {
        expect(hex(encodeCall(id, method))).toBe(hex(encode([PROTOCOL_VERSION, FrameType.CALL, id, method])))
        expect(hex(encodeCast(method))).toBe(hex(encode([PROTOCOL_VERSION, FrameType.CAST, method])))
        expect(hex(encodeReply(id))).toBe(hex(encode([PROTOCOL_VERSION, FrameType.REPLY, id])))
      }),
    )
  })

  it('a data envelope in any msgpack form, damaged or not, decodes as its msgpack value says', () => {
    // The fast path reads the reference's own forms byte by byte; every other form must reach the general path and agree with msgpack.
    const uint = (prefix: number, size: number, n: number): number[] => [
      prefix,
      ...Buffer.from(n.toString(16).padStart(size * 2, '0'), 'hex'),
    ]
    const id = fc.oneof(
      fc.integer({ min: 0, max: 0x7f }).map((n) => [n]),
      fc.integer({ min: 0, max: 0xff }).map((n) => uint(0xcc, 1, n)),
      fc.integer({ min: 0, max: 0xffff }).map((n) => uint(0xcd, 2, n)),
      callId.map((n) => uint(0xce, 4, n)),
      fc.integer({ min: 0, max: 0x7fffffff }).map((n) => uint(0xd2, 4, n)),
      callId.map((n) => uint(0xcf, 8, n)),
      fc.integer({ min: -32, max: -1 }).map((n) => [n & 0xff]),
    )
    const str = (s: string, form: number): number[] => {
      const b = [...Buffer.from(s)]
      return form === 0 && b.length < 32 ? [0xa0 | b.length, ...b] : form === 1 ? [0xd9, b.length, ...b] : uint(0xda, 2, b.length).concat(b)
    }
    const method = fc.tuple(fc.oneof(fc.stringMatching(/^[A-Za-z.]{0,40}$/), text), fc.nat(2)).map(([s, form]) => str(s, form))
    // After the method: nothing, a deadline or nil, and metadata as bin 8, 16 or 32 (the reference writes the first two).
    const bin = fc
      .tuple(fc.uint8Array({ maxLength: 300 }), fc.nat(2))
      .map(([b, form]) =>
        form === 0 && b.length < 256
          ? [0xc4, b.length, ...b]
          : form === 1
            ? uint(0xc5, 2, b.length).concat([...b])
            : uint(0xc6, 4, b.length).concat([...b]),
      )
    const extra = fc.oneof(
      fc.constant([] as number[]),
      id,
      fc.constant([0xc0]),
      bin,
      fc.tuple(fc.oneof(id, fc.constant([0xc0])), bin).map(([d, m]) => [...d, ...m]),
    )
    const envelope = fc
      .tuple(fc.integer({ min: 0x90, max: 0x9f }), fc.constantFrom(1, 2), fc.constantFrom(6, 7, 8), id, method, fc.boolean(), extra)
      .map(([head, version, type, id, method, withId, more]) =>
        Uint8Array.from([head, version, type, ...(withId ? id : []), ...method, ...more]),
      )
    const damaged = fc.tuple(envelope, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(3)).map(([e, at, byte, how]) => {
      const j = e.length === 0 ? 0 : at % e.length
      if (how === 0) return e.subarray(0, j)
      if (how === 1) return Uint8Array.from(e.map((b, i) => (i === j ? byte : b)))
      if (how === 2) return Uint8Array.from([...e, byte])
      return e
    })
    const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff
    const body = encodeBody('b')
    fc.assert(
      fc.property(damaged, fc.boolean(), (e, asBuffer) => {
        let value: unknown
        try {
          value = decode(e, { useBigInt64: true })
        } catch {
          value = undefined
        }
        // Beyond the envelope limits (section 3.1: no extension values, no maps, nesting 2) the general path refuses the envelope.
        const scalar = (x: unknown): boolean => !(x instanceof ExtData) && (x === null || typeof x !== 'object' || x instanceof Uint8Array)
        const inLimits = (x: unknown): boolean => scalar(x) || (Array.isArray(x) && x.every(scalar))
        if (Array.isArray(value) && !value.every(inLimits)) value = undefined
        const [v, t, a, b, c, d] = Array.isArray(value) ? value : []
        // Optional fields: absent or nil is not given; given, each must have its type.
        const given = (x: unknown): boolean => x !== undefined && x !== null
        const call = (): Frame | undefined => {
          if (!isId(a) || typeof b !== 'string') return undefined
          if (given(c) && !isId(c)) return undefined
          if (given(d) && !(d instanceof Uint8Array)) return undefined
          return { type: FrameType.CALL, id: a, method: b, body, ...(given(c) ? { deadline: c } : {}), ...(given(d) ? { meta: d } : {}) }
        }
        const expected =
          v !== PROTOCOL_VERSION || (value as unknown[]).length < 2
            ? undefined
            : t === FrameType.CALL
              ? call()
              : t === FrameType.CAST && typeof a === 'string' && (!given(b) || b instanceof Uint8Array)
                ? { type: t, method: a, body, ...(given(b) ? { meta: b } : {}) }
                : t === FrameType.REPLY && isId(a)
                  ? { type: t, id: a, body }
                  : undefined
        let frames: Frame[] | undefined
        try {
          frames = codec.decodeMessage([asBuffer ? Buffer.from(e) : e, body])
        } catch (error) {
          if (!(error instanceof CodecError)) throw error
        }
        if (expected !== undefined) expect(frames).toEqual([expected])
        else if (frames !== undefined) expect([FrameType.CALL, FrameType.CAST, FrameType.REPLY]).not.toContain(frames[0]!.type)
      }),
      { numRuns: 5000 },
    )
  })

  it('decodeBody of arbitrary bytes returns a value or throws CodecError, never another error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 48 }), (data) => {
        try {
          codec.decodeBody(data)
        } catch (error) {
          if (!(error instanceof CodecError)) throw error
        }
      }),
      { numRuns: 2000 },
    )
  })
})
