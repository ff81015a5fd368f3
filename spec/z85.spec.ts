import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { z85Decode, z85Encode } from '../lib/z85.js'

const HELLO_WORLD = Uint8Array.from([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b])

describe('Z85 (ZeroMQ RFC 32)', () => {
  it('encodes and decodes the RFC test vector', () => {
    expect(z85Encode(HELLO_WORLD)).toBe('HelloWorld')
    expect(z85Decode('HelloWorld')).toEqual(HELLO_WORLD)
  })

  it('handles empty input and the extremes of a 32-bit group', () => {
    expect(z85Encode(new Uint8Array(0))).toBe('')
    expect(z85Decode('')).toEqual(new Uint8Array(0))
    expect(z85Encode(new Uint8Array(4))).toBe('00000')
    expect(z85Encode(new Uint8Array(4).fill(0xff))).toBe('%nSc0')
    expect(z85Decode('%nSc0')).toEqual(new Uint8Array(4).fill(0xff))
  })

  it('round-trips random 32-byte keys as 40 characters', () => {
    for (let i = 0; i < 200; i++) {
      const key = new Uint8Array(randomBytes(32))
      const text = z85Encode(key)
      expect(text).toHaveLength(40)
      expect(z85Decode(text)).toEqual(key)
    }
  })

  it('accepts a Uint8Array view at an offset into a larger buffer', () => {
    const backing = new Uint8Array(12)
    backing.set(HELLO_WORLD, 4)
    expect(z85Encode(backing.subarray(4))).toBe('HelloWorld')
  })

  it('rejects byte lengths that are not a multiple of 4', () => {
    for (const n of [1, 2, 3, 5, 31, 33]) expect(() => z85Encode(new Uint8Array(n))).toThrow(TypeError)
  })

  it('rejects text lengths that are not a multiple of 5', () => {
    for (const text of ['H', 'Hell', 'HelloW', 'HelloWorl']) expect(() => z85Decode(text)).toThrow(TypeError)
  })

  it('rejects characters outside the Z85 alphabet', () => {
    for (const text of [
      'Hello Worl',
      'Hell"World',
      "Hell'World",
      'Hell,World',
      'Hell;World',
      'Hell\\World',
      'Hell_World',
      'Hell~World',
      'HellöWorld',
      'Hell|World',
    ])
      expect(() => z85Decode(text), text).toThrow(TypeError)
  })

  it('rejects groups whose value exceeds 32 bits', () => {
    expect(() => z85Decode('%nSc1')).toThrow(TypeError)
    expect(() => z85Decode('#####')).toThrow(/32 bits/)
  })

  it('rejects input of the wrong type', () => {
    expect(() => z85Encode('HelloWorld' as unknown as Uint8Array)).toThrow(TypeError)
    expect(() => z85Decode(HELLO_WORLD as unknown as string)).toThrow(TypeError)
  })
})
