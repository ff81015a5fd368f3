/**
 * Metadata's hand-written codec against msgpack itself: the same bytes out,
 * the same map back, and for any bytes a peer may send either that map or a
 * BAD_REQUEST, never another error.
 */
import { decode, encode } from '@msgpack/msgpack'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { META_KEY, decodeMeta, encodeMeta } from '../lib/calls/meta.js'
import { BilateralError } from '../lib/errors.js'

/** No lone surrogate (String.prototype.isWellFormed, which the ES2022 library lacks). */
const wellFormed = (text: string): boolean => !/\p{Surrogate}/u.test(text)

const key = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,63}$/)
const value = fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 40 }), fc.uint8Array({ maxLength: 300 }))
const meta = fc.dictionary(key, value, { minKeys: 1, maxKeys: 20 })

describe('metadata', () => {
  it('encodes byte for byte as msgpack does, and decodes back to what was given', () => {
    fc.assert(
      fc.property(meta, (m) => {
        const bytes = encodeMeta(m, 1 << 20)!
        expect(Buffer.from(bytes)).toEqual(Buffer.from(encode(m)))
        expect(decodeMeta(bytes, 1 << 20, 'p')).toEqual(m)
      }),
      { numRuns: 300 },
    )
  })

  it('decodes any bytes to the flat map msgpack reads, or refuses them BAD_REQUEST', () => {
    const nearly = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      meta.chain((m) =>
        fc.tuple(fc.constant(encode(m)), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(2)).map(([e, at, byte, how]) => {
          const j = at % e.length
          return how === 0
            ? e.subarray(0, j)
            : how === 1
              ? Uint8Array.from(e.map((b, i) => (i === j ? byte : b)))
              : Uint8Array.from([...e, byte])
        }),
      ),
    )
    fc.assert(
      fc.property(nearly, (bytes) => {
        let expected: unknown
        try {
          const v = decode(bytes) as unknown
          const flat =
            v !== null &&
            typeof v === 'object' &&
            !Array.isArray(v) &&
            !(v instanceof Uint8Array) &&
            Object.entries(v).every(([k, x]) => META_KEY.test(k) && (typeof x === 'string' || x instanceof Uint8Array))
          expected = flat ? v : undefined
        } catch {
          expected = undefined
        }
        let got: unknown
        try {
          got = decodeMeta(bytes, 1 << 20, 'p')
        } catch (error) {
          expect(error).toBeInstanceOf(BilateralError)
          expect((error as BilateralError).code).toBe('BAD_REQUEST')
          got = undefined
        }
        // msgpack reads integer and binary keys as strings; metadata refuses every key that is not a string.
        if (expected !== undefined && got === undefined) {
          // Refused although msgpack reads a flat map: only for bytes that are not what a string-keyed map encodes to.
          expect(Buffer.from(encode(expected)).equals(Buffer.from(bytes))).toBe(false)
          return
        }
        if (expected === undefined || got === undefined) {
          expect(got).toEqual(expected)
          return
        }
        // Invalid UTF-8 decodes to unspecified text (PROTOCOL.md 3.1): only well-formed strings must agree.
        const want = expected as Record<string, unknown>
        const have = got as Record<string, unknown>
        expect(Object.keys(have)).toEqual(Object.keys(want))
        for (const [k, x] of Object.entries(want)) {
          const y = have[k]
          const text = typeof x === 'string' ? x : ''
          if (typeof x !== 'string' || (wellFormed(text) && !text.includes('\uFFFD') && !String(y).includes('\uFFFD'))) expect(y).toEqual(x)
          else expect(typeof y).toBe('string')
        }
      }),
      { numRuns: 3000 },
    )
  })

  it('refuses what is too large for the receiver, and a caller’s beyond its own limit', () => {
    const bytes = encodeMeta({ k: 'x'.repeat(100) }, 1 << 20)!
    expect(() => decodeMeta(bytes, 50, 'p')).toThrow(/more than maxMetaBytes/)
    expect(() => encodeMeta({ k: 'x'.repeat(100) }, 50)).toThrow(expect.objectContaining({ code: 'TOO_LARGE' }))
    expect(encodeMeta({}, 10)).toBeUndefined()
  })
})
