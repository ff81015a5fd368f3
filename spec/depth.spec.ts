import fc from 'fast-check'
import { decode, encode } from '@msgpack/msgpack'
import { expect, it } from 'vitest'
import { MAX_DEPTH, tooDeep } from '../lib/wire/walk.js'
import { encodeBody } from '../lib/wire/body.js'
import { Codec, CodecError } from '../lib/wire/codec.js'

/** Containers open at the deepest point of a decoded value (a scalar is 0). */
function depthOf(value: unknown): number {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(depthOf))
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array) && !(value instanceof Date)) {
    return 1 + Math.max(0, ...Object.values(value).map(depthOf))
  }
  return 0
}

const wrap = (bytes: Uint8Array, times: number): Uint8Array => new Uint8Array([...Array<number>(times).fill(0x91), ...bytes])

it('agrees with the depth of the decoded value, for any value and any extra nesting', () => {
  const value = fc.letrec((tie) => ({
    any: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.oneof(fc.integer(), fc.double(), fc.string(), fc.boolean(), fc.constant(null), fc.uint8Array({ maxLength: 300 })),
      fc.array(tie('any'), { maxLength: 4 }),
      fc.dictionary(fc.string({ maxLength: 4 }), tie('any'), { maxKeys: 4 }),
    ),
  })).any
  fc.assert(
    fc.property(value, fc.nat(MAX_DEPTH + 5), (v, extra) => {
      const bytes = wrap(encode(v), extra)
      expect(tooDeep(bytes)).toBe(depthOf(decode(bytes)) > MAX_DEPTH)
    }),
    { numRuns: 500 },
  )
})

it('accepts exactly what our encoder can produce: 100 nested containers, not 101', () => {
  let v: unknown = []
  for (let i = 1; i < MAX_DEPTH; i++) v = [v]
  expect(tooDeep(encode(v))).toBe(false)
  expect(() => encode([v])).toThrow(/Too deep/)
  expect(tooDeep(wrap(encode(v), 1))).toBe(true)
  // Maps count like arrays; long strings, binaries and 32-bit lengths are skipped, not walked.
  const map = wrap(new Uint8Array([0x81, 0xdb, 0, 0, 0, 3, 0x61, 0x62, 0x63, 0xc6, 0, 0, 0, 2, 1, 2]), MAX_DEPTH - 1)
  expect(tooDeep(map)).toBe(false)
  expect(tooDeep(wrap(map, 1))).toBe(true)
})

it('leaves truncated and invalid input to the decoder', () => {
  expect(tooDeep(new Uint8Array(200).fill(0xc1))).toBe(false)
  expect(tooDeep(new Uint8Array([...Array<number>(150).fill(0x92), 0xdb, 0xff]))).toBe(true)
  expect(tooDeep(new Uint8Array([0xdc, 0, 5, ...Array<number>(150).fill(0xc6)]))).toBe(false)
})

it('encodeBody and decodeBody agree on the boundary: a value 100 containers deep, whatever its leaf, is sent and read; 101 is neither', () => {
  const codec = new Codec()
  for (const leaf of [1, 'x', null, new Uint8Array([1]), new Date(5), [], {}]) {
    const deep = (levels: number): unknown => {
      let v: unknown = leaf
      // An empty container leaf is a level itself.
      const own =
        Array.isArray(leaf) || (typeof leaf === 'object' && leaf !== null && !(leaf instanceof Uint8Array) && !(leaf instanceof Date))
          ? 1
          : 0
      for (let i = own; i < levels; i++) v = i % 2 === 0 ? [v] : { k: v }
      return v
    }
    const body = encodeBody(deep(MAX_DEPTH))
    expect(depthOf(codec.decodeBody(body))).toBe(MAX_DEPTH)
    expect(() => encodeBody(deep(MAX_DEPTH + 1))).toThrow(/nested too deeply/)
    expect(() => codec.decodeBody(wrap(body, 1))).toThrow(CodecError)
  }
})
