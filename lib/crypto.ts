/**
 * CURVE key handling. This is the only module that touches libsodium; keys
 * cross its boundary as 40-character Z85 strings, the form ZeroMQ accepts for
 * `curvePublicKey`, `curveSecretKey` and `curveServerKey`.
 */
import sodium from 'libsodium-wrappers'
import { BilateralError } from './errors.js'
import { z85Decode, z85Encode } from './z85.js'

/** A CURVE keypair as Z85 text. Keep `secretKey` private. */
export interface Keypair {
  publicKey: string
  secretKey: string
}

const KEY_BYTES = 32
const KEY_CHARS = 40

// Ready once at import (about 25 ms), so the node's own checks can be synchronous.
await sodium.ready

/** Make a new Curve25519 keypair for ZeroMQ CURVE, as 40-character Z85 strings. */
export async function generateKeypair(): Promise<Keypair> {
  await sodium.ready
  const { publicKey, privateKey } = sodium.crypto_box_keypair()
  try {
    return { publicKey: z85Encode(publicKey), secretKey: z85Encode(privateKey) }
  } finally {
    sodium.memzero(privateKey)
  }
}

/**
 * The public key belonging to `secretKey` (both Z85). Throws a
 * {@link BilateralError} with code `INVALID_ARGUMENT` if `secretKey` is not a
 * 40-character Z85 key.
 */
export async function publicKeyOf(secretKey: string): Promise<string> {
  if (!isZ85Key(secretKey)) {
    throw new BilateralError('INVALID_ARGUMENT', `secret key must be a ${KEY_CHARS}-character Z85 string`)
  }
  await sodium.ready
  const secret = z85Decode(secretKey)
  try {
    return z85Encode(sodium.crypto_scalarmult_base(secret))
  } finally {
    sodium.memzero(secret)
  }
}

/** Whether `s` is a 40-character Z85 string encoding 32 bytes (a CURVE key). */
export function isZ85Key(s: unknown): boolean {
  if (typeof s !== 'string' || s.length !== KEY_CHARS) return false
  try {
    return z85Decode(s).length === KEY_BYTES
  } catch {
    return false
  }
}

/** The public key of `secretKey` (both Z85), synchronously; throws INVALID_ARGUMENT for a malformed key. */
export function derivePublicKey(secretKey: string): string {
  if (!isZ85Key(secretKey)) throw new BilateralError('INVALID_ARGUMENT', `secret key must be a ${KEY_CHARS}-character Z85 string`)
  const secret = z85Decode(secretKey)
  try {
    return z85Encode(sodium.crypto_scalarmult_base(secret))
  } finally {
    sodium.memzero(secret)
  }
}

const NONCE_BYTES = 24

function joinStatement(network: string, listener: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`bilateral-join/1\0${network}\0`)
  const statement = new Uint8Array(head.length + listener.length)
  statement.set(head)
  statement.set(listener, head.length)
  return statement
}

/**
 * A JOIN proof: the dialler shows it holds the secret key of the name it
 * claims by boxing a statement naming the network and the listener's key
 * (crypto_box: X25519 + XSalsa20-Poly1305, from the dialler's secret key to
 * the listener's public key). Only the listener can open it, and it is bound
 * to that listener, so it is worthless to anyone else. Layout: nonce (24) || box.
 */
export function makeJoinProof(network: string, dialerSecretKey: string, listenerPublicKey: string): Uint8Array {
  const listener = z85Decode(listenerPublicKey)
  const secret = z85Decode(dialerSecretKey)
  try {
    const nonce = sodium.randombytes_buf(NONCE_BYTES)
    const box = sodium.crypto_box_easy(joinStatement(network, listener), nonce, listener, secret)
    const proof = new Uint8Array(NONCE_BYTES + box.length)
    proof.set(nonce)
    proof.set(box, NONCE_BYTES)
    return proof
  } finally {
    sodium.memzero(secret)
  }
}

/** Does `proof` show that whoever made it holds the secret key of `dialerPublicKey`? */
export function checkJoinProof(
  proof: Uint8Array | undefined,
  network: string,
  dialerPublicKey: string,
  listenerSecretKey: string,
): boolean {
  if (proof === undefined || proof.length <= NONCE_BYTES || !isZ85Key(dialerPublicKey)) return false
  const secret = z85Decode(listenerSecretKey)
  try {
    const opened = sodium.crypto_box_open_easy(
      proof.subarray(NONCE_BYTES),
      proof.subarray(0, NONCE_BYTES),
      z85Decode(dialerPublicKey),
      secret,
    )
    const expected = joinStatement(network, sodium.crypto_scalarmult_base(secret))
    return sodium.memcmp(opened, expected)
  } catch {
    return false
  } finally {
    sodium.memzero(secret)
  }
}
