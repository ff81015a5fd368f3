/**
 * The JOIN proof vectors (spec/vectors/proofs.json): fixed keys, CHALLENGE
 * nonce, incarnation and box nonce, so an implementer can check each step of
 * PROTOCOL.md 4.2 byte for byte: the statement, the box, the JOIN carrying it.
 */
import { readFileSync } from 'node:fs'
import sodium from 'libsodium-wrappers'
import { beforeAll, describe, expect, it } from 'vitest'
import { checkFreshProof, checkJoinProof, derivePublicKey } from '../lib/crypto.js'
import { Codec } from '../lib/wire/codec.js'
import { z85Decode } from '../lib/z85.js'

interface ProofVector {
  name: string
  version: 1 | 2
  network: string
  dialer: { publicKey: string; secretKey: string }
  listener: { publicKey: string; secretKey: string }
  challenge?: string
  incarnation?: string
  boxNonce: string
  statement: string
  proof: string
  join: string
}

const vectors = JSON.parse(readFileSync(new URL('./vectors/proofs.json', import.meta.url), 'utf8')) as ProofVector[]
const bytes = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'))

beforeAll(() => sodium.ready)

describe.each(vectors)('$name', (v) => {
  it('the keys are pairs', () => {
    expect(derivePublicKey(v.dialer.secretKey)).toBe(v.dialer.publicKey)
    expect(derivePublicKey(v.listener.secretKey)).toBe(v.listener.publicKey)
  })

  it('the statement is "bilateral-join/<version>\\0<network>\\0", the listener’s public key, and for version 2 the nonce and incarnation', () => {
    const tail = v.version === 2 ? [...bytes(v.challenge!), ...bytes(v.incarnation!)] : []
    const built = [...Buffer.from(`bilateral-join/${v.version}\0${v.network}\0`), ...z85Decode(v.listener.publicKey), ...tail]
    expect(Buffer.from(built).toString('hex')).toBe(v.statement)
  })

  it('the proof is the box nonce, then crypto_box_easy of the statement from the dialler to the listener', () => {
    const sealed = sodium.crypto_box_easy(
      bytes(v.statement),
      bytes(v.boxNonce),
      z85Decode(v.listener.publicKey),
      z85Decode(v.dialer.secretKey),
    )
    expect(Buffer.from([...bytes(v.boxNonce), ...sealed]).toString('hex')).toBe(v.proof)
  })

  it('the listener accepts it, and refuses it with one byte changed', () => {
    const check = (proof: Uint8Array): boolean =>
      v.version === 2
        ? checkFreshProof(proof, v.network, v.dialer.publicKey, v.listener.secretKey, bytes(v.challenge!), bytes(v.incarnation!))
        : checkJoinProof(proof, v.network, v.dialer.publicKey, v.listener.secretKey)
    const proof = bytes(v.proof)
    expect(check(proof)).toBe(true)
    for (const at of [0, 30, proof.length - 1]) {
      const bad = Uint8Array.from(proof)
      bad[at]! ^= 1
      expect(check(bad)).toBe(false)
    }
  })

  it('the JOIN carrying it decodes to it', () => {
    const [frame] = new Codec().decodeMessage([bytes(v.join)])
    expect(frame).toMatchObject({
      type: 1,
      network: v.network,
      name: v.dialer.publicKey,
      target: v.listener.publicKey,
      proof: bytes(v.proof),
    })
  })
})
