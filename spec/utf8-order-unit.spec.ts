// compareUtf8 orders names exactly as their UTF-8 bytes do (the order the
// wire uses), for every kind of code unit: ASCII, the rest of the BMP on both
// sides of the surrogates, pairs, and lone surrogates (which UTF-8 writes as
// U+FFFD), including one string being the start of the other.
import { describe, expect, it } from 'vitest'
import { compareUtf8 } from '../lib/utf8-order.js'

const units = [0x41, 0x61, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd83d, 0xde00, 0xdbff, 0xdfff, 0xe000, 0xfffd, 0xffff]
const sign = (n: number): number => Math.sign(n)
const bytewise = (a: string, b: string): number => sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))

describe('compareUtf8', () => {
  it('agrees with comparing the UTF-8 bytes, on every pair of short strings of awkward code units', () => {
    const strings = ['']
    for (const u of units) strings.push(String.fromCharCode(u))
    for (const u of units) for (const v of units) strings.push(String.fromCharCode(u, v))
    for (const s of strings.slice(0, 40)) strings.push(`x${s}y`, `${s}😀`)
    for (const a of strings) for (const b of strings) expect([a, b, sign(compareUtf8(a, b))]).toEqual([a, b, bytewise(a, b)])
  })

  it('agrees on random names of any code units (seeded)', () => {
    let seed = 42
    const next = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
    const random = (): string =>
      String.fromCharCode(...Array.from({ length: next(6) }, () => (next(2) ? units[next(units.length)]! : 0x61 + next(3))))
    for (let i = 0; i < 20_000; i++) {
      const a = random()
      const b = next(3) ? random() : a + random()
      expect(sign(compareUtf8(a, b))).toBe(bytewise(a, b))
    }
  })
})
