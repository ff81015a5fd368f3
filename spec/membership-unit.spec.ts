// Member records on their own: which is newer, what a peer's record must be,
// and the table hash against the vectors PROTOCOL.md 20 gives.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { decode, encode } from '@msgpack/msgpack'
import { describe, expect, it } from 'vitest'
import { checkDigest, checkRecord, hashOf, newer, tooLate, type DigestEntry, type MemberRecord } from '../lib/membership/records.js'

const vectors = JSON.parse(readFileSync(new URL('./vectors/membership.json', import.meta.url), 'utf8')) as {
  name: string
  digest: DigestEntry[]
  sorted: string
  hash: string
}[]

const record = (fields: Partial<MemberRecord> = {}): MemberRecord => ({
  name: 'm',
  addresses: ['tcp://127.0.0.1:7000'],
  roles: [],
  offers: [],
  incarnation: 100,
  version: 0,
  status: 0,
  ...fields,
})

const recordVectors = JSON.parse(readFileSync(new URL('./vectors/member-records.json', import.meta.url), 'utf8')) as {
  name: string
  record: MemberRecord
  hex: string
  read?: MemberRecord
}[]

describe('member records', () => {
  for (const v of recordVectors) {
    it(`record vector: ${v.name}`, () => {
      // The bytes are the record's msgpack map; read as a peer sends it, 64-bit integers as BigInt.
      expect(Buffer.from(encode(v.record)).toString('hex')).toBe(v.hex)
      expect(checkRecord(decode(Buffer.from(v.hex, 'hex'), { useBigInt64: true }))).toEqual(v.read ?? v.record)
    })
  }

  for (const v of vectors) {
    it(`hash vector: ${v.name}`, () => {
      // The hash is of the sorted encoding given, computed here without the library's code...
      expect(createHash('sha256').update(Buffer.from(v.sorted, 'hex')).digest('base64').slice(0, 22)).toBe(v.hash)
      // ...and the library gives the same from the digest, in either order.
      expect(hashOf(v.digest)).toBe(v.hash)
      expect(hashOf([...v.digest].reverse())).toBe(v.hash)
    })
  }

  it('newer: a later incarnation, then a later version, then the higher status (left over dead over alive)', () => {
    expect(newer(record({ incarnation: 101 }), record({ version: 9, status: 2 }))).toBe(true)
    expect(newer(record({ version: 1 }), record({ status: 2 }))).toBe(true)
    expect(newer(record({ status: 1 }), record())).toBe(true)
    expect(newer(record({ status: 2 }), record({ status: 1 }))).toBe(true)
    expect(newer(record(), record({ status: 1 }))).toBe(false)
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
    ['a status of 3', { status: 3 }],
    ['a status as a string', { status: 'alive' }],
    ['a version beyond 2^32 - 1', { version: 2 ** 32 }],
    ['a name that is an endpoint', { name: 'tcp://10.0.0.1:7000' }],
    ['17 roles', { roles: Array.from({ length: 17 }, (_, i) => `r${i}`) }],
    ['a role of 65 bytes', { roles: ['r'.repeat(65)] }],
    ['an empty role', { roles: [''] }],
    ['roles as a string', { roles: 'indexer' }],
    ['65 receivers offered', { offers: Array.from({ length: 65 }, (_, i) => `R${i}`) }],
    ['a receiver name of 65 bytes', { offers: ['R'.repeat(65)] }],
    ['a receiver that is a number', { offers: [7] }],
  ])('a record with %s is refused INVALID_ARGUMENT', (_, fields) => {
    expect(() => checkRecord({ ...record(), ...fields })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('roles and offers are optional (absent is empty) and kept as sent when within bounds', () => {
    const { roles: _r, offers: _o, ...bare } = record()
    expect(checkRecord(bare)).toMatchObject({ roles: [], offers: [] })
    const full = record({ roles: Array.from({ length: 16 }, (_, i) => `r${i}`), offers: Array.from({ length: 64 }, (_, i) => `R${i}`) })
    expect(checkRecord(full)).toEqual(full)
  })

  it('counts may come as BigInt (a 64-bit msgpack integer) or an integral float; one far ahead of our clock is only too late', () => {
    expect(checkRecord({ ...record(), incarnation: 1764600000000n, version: 2n })).toMatchObject({ incarnation: 1764600000000, version: 2 })
    expect(checkRecord({ ...record(), incarnation: 1764600000000.0 })).toMatchObject({ incarnation: 1764600000000 })
    expect(() => checkRecord({ ...record(), incarnation: 2n ** 60n })).toThrow(/incarnation and version/)
    expect(tooLate(record({ incarnation: Date.now() + 6 * 60 * 1000 }))).toBe(true)
    expect(tooLate(record({ incarnation: Date.now() + 60 * 1000 }))).toBe(false)
  })

  it('a digest is at most 1025 entries (a full table and its owner) of [name, incarnation, version, status]', () => {
    expect(checkDigest([['a', 1, 0, 1]])).toEqual([['a', 1, 0, 1]])
    expect(checkDigest(Array(1025).fill(['a', 1, 0, 0]))).toHaveLength(1025)
    expect(() => checkDigest(Array(1026).fill(['a', 1, 0, 0]))).toThrow(/at most 1025/)
    expect(() => checkDigest([['a', 1, 0, false]])).toThrow(/digest entry/)
    expect(() => checkDigest([['a', 1, 0]])).toThrow(/digest entry/)
    expect(() => checkDigest('x')).toThrow(/at most 1025/)
  })
})
