/**
 * CURVE key handling. This is the only module that touches libsodium; keys
 * cross its boundary as 40-character Z85 strings, the form ZeroMQ accepts for
 * `curvePublicKey`, `curveSecretKey` and `curveServerKey`.
 */
import { createPrivateKey, createPublicKey, randomBytes as nodeRandomBytes } from 'node:crypto'
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

// libsodium readies its WebAssembly asynchronously (about 50 ms). Not awaited at
// import, so `require('bilateral')` works (no top-level await): what needs it
// waits for `sodiumPending()`, and what is needed synchronously at once
// (deriving a public key, random bytes) uses Node's own crypto.
let sodiumReady = false
const readying: Promise<void> = sodium.ready.then(() => {
  sodiumReady = true
})

/** While libsodium is still getting ready, the promise of it; undefined once it is. */
export function sodiumPending(): Promise<void> | undefined {
  return sodiumReady ? undefined : readying
}

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

/** DER header of a PKCS#8 X25519 private key; the 32 secret bytes follow. */
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex')

/**
 * The public key of `secretKey` (both Z85), synchronously, with Node's own
 * X25519 (the same clamped scalar multiplication as libsodium's
 * crypto_scalarmult_base); throws INVALID_ARGUMENT for a malformed key.
 */
export function derivePublicKey(secretKey: string): string {
  if (!isZ85Key(secretKey)) throw new BilateralError('INVALID_ARGUMENT', `secret key must be a ${KEY_CHARS}-character Z85 string`)
  const secret = z85Decode(secretKey)
  const der = Buffer.concat([X25519_PKCS8, secret])
  secret.fill(0)
  try {
    const { x } = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' })
    return z85Encode(Buffer.from(x!, 'base64url'))
  } finally {
    der.fill(0)
  }
}

const NONCE_BYTES = 24

function statement(version: 1 | 2, network: string, listener: Uint8Array, challenge: Uint8Array = EMPTY): Uint8Array {
  const head = new TextEncoder().encode(`bilateral-join/${version}\0${network}\0`)
  const out = new Uint8Array(head.length + listener.length + challenge.length)
  out.set(head)
  out.set(listener, head.length)
  out.set(challenge, head.length + listener.length)
  return out
}
const EMPTY = new Uint8Array(0)

/** `nonce || crypto_box_easy(message, nonce, to, from)`: X25519 + XSalsa20-Poly1305, from the dialler's secret key to the listener's public key. */
function box(message: Uint8Array, listenerPublicKey: string, dialerSecretKey: string): Uint8Array {
  const listener = z85Decode(listenerPublicKey)
  const secret = z85Decode(dialerSecretKey)
  try {
    const nonce = sodium.randombytes_buf(NONCE_BYTES)
    const sealed = sodium.crypto_box_easy(message, nonce, listener, secret)
    const proof = new Uint8Array(NONCE_BYTES + sealed.length)
    proof.set(nonce)
    proof.set(sealed, NONCE_BYTES)
    return proof
  } finally {
    sodium.memzero(secret)
  }
}

/** Opens `proof` (from `box`) with the listener's secret key; does it hold exactly what `expected` builds from the listener's public key? */
function opens(
  proof: Uint8Array | undefined,
  dialerPublicKey: string,
  listenerSecretKey: string,
  expected: (listener: Uint8Array) => Uint8Array,
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
    const want = expected(sodium.crypto_scalarmult_base(secret))
    return opened.length === want.length && sodium.memcmp(opened, want)
  } catch {
    return false
  } finally {
    sodium.memzero(secret)
  }
}

/**
 * The static JOIN proof of earlier releases (PROTOCOL.md 4.2): the same
 * bytes are valid on every connection to that listener, so whoever obtains
 * them can replay them. Still sent first, for listeners of an earlier
 * release; refused by this one unless `legacyJoinProofs` is set.
 */
export function makeJoinProof(network: string, dialerSecretKey: string, listenerPublicKey: string): Uint8Array {
  return box(statement(1, network, z85Decode(listenerPublicKey)), listenerPublicKey, dialerSecretKey)
}

/** Does the static `proof` show that whoever made it holds the secret key of `dialerPublicKey`? */
export function checkJoinProof(
  proof: Uint8Array | undefined,
  network: string,
  dialerPublicKey: string,
  listenerSecretKey: string,
): boolean {
  return opens(proof, dialerPublicKey, listenerSecretKey, (listener) => statement(1, network, listener))
}

/**
 * The fresh JOIN proof (PROTOCOL.md 4.2): boxes the listener's CHALLENGE
 * nonce for this connection and the dialler's incarnation, so it is valid
 * on that one connection only, for that run of the dialler.
 */
export function makeFreshProof(
  network: string,
  dialerSecretKey: string,
  listenerPublicKey: string,
  challenge: Uint8Array,
  incarnation: Uint8Array,
): Uint8Array {
  return box(statement(2, network, z85Decode(listenerPublicKey), concat(challenge, incarnation)), listenerPublicKey, dialerSecretKey)
}

/** Does `proof` answer `challenge` for `incarnation`, made with the secret key of `dialerPublicKey`? */
export function checkFreshProof(
  proof: Uint8Array | undefined,
  network: string,
  dialerPublicKey: string,
  listenerSecretKey: string,
  challenge: Uint8Array,
  incarnation: Uint8Array,
): boolean {
  return opens(proof, dialerPublicKey, listenerSecretKey, (listener) => statement(2, network, listener, concat(challenge, incarnation)))
}

/** `size` random bytes (Node's CSPRNG). */
export function randomBytes(size: number): Uint8Array {
  return new Uint8Array(nodeRandomBytes(size))
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
