// Member records on their own: which is newer, what a peer's record must be,
// and the table hash against the vectors PROTOCOL.md 20 gives.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { checkDigest, checkRecord, hashOf, newer, type DigestEntry, type MemberRecord } from '../lib/membership/records.js'

const vectors = JSON.parse(readFileSync(new URL('./vectors/membership.json', import.meta.url), 'utf8')) as {
  name: string
  digest: DigestEntry[]
  sorted: string
  hash: string
}[]

const record = (fields: Partial<MemberRecord> = {}): MemberRecord => ({
  name: 'm',
  addresses: ['tcp://127.0.0.1:7000'],
  incarnation: 100,
  version: 0,
  left: false,
  ...fields,
})

describe('member records', () => {
  for (const v of vectors) {
    it(`hash vector: ${v.name}`, () => {
      // The hash is of the sorted encoding given, computed here without the library's code...
      expect(createHash('sha256').update(Buffer.from(v.sorted, 'hex')).digest('base64').slice(0, 22)).toBe(v.hash)
      // ...and the library gives the same from the digest, in either order.
      expect(hashOf(v.digest)).toBe(v.hash)
      expect(hashOf([...v.digest].reverse())).toBe(v.hash)
    })
  }

  it('newer: a later incarnation, then a later version, then left over not left', () => {
    expect(newer(record({ incarnation: 101 }), record({ version: 9 }))).toBe(true)
    expect(newer(record({ version: 1 }), record())).toBe(true)
    expect(newer(record({ left: true }), record())).toBe(true)
    expect(newer(record(), record({ left: true }))).toBe(false)
    expect(newer(record(), record())).toBe(false)
  })

  it.each([
    ['a name of 256 bytes', { name: 'n'.repeat(256) }],
    ['an empty name', { name: '' }],
    ['nine addresses', { addresses: Array(9).fill('tcp://h:1') }],
    ['an address that is no endpoint', { addresses: ['h:1'] }],
    ['an address of 257 bytes', { addresses: [`tcp://${'h'.repeat(251)}`] }],
    ['a negative incarnation', { incarnation: -1 }],
    ['a fractional version', { version: 0.5 }],
    ['left as a string', { left: 'yes' }],
    ['a version beyond 2^32 - 1', { version: 2 ** 32 }],
    ['an incarnation more than an hour ahead of our clock', { incarnation: Date.now() + 2 * 60 * 60 * 1000 }],
  ])('a record with %s is refused INVALID_ARGUMENT', (_, fields) => {
    expect(() => checkRecord({ ...record(), ...fields })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('a digest is at most 1024 entries of [name, incarnation, version, left]', () => {
    expect(checkDigest([['a', 1, 0, false]])).toEqual([['a', 1, 0, false]])
    expect(() => checkDigest(Array(1025).fill(['a', 1, 0, false]))).toThrow(/at most 1024/)
    expect(() => checkDigest([['a', 1, 0]])).toThrow(/digest entry/)
    expect(() => checkDigest('x')).toThrow(/at most 1024/)
  })
})
