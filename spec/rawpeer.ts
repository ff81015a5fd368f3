/**
 * A peer written from PROTOCOL.md alone, on a raw ZeroMQ DEALER: it builds
 * its envelopes with msgpack and its JOIN proofs with libsodium, and imports
 * nothing of bilateral, so tests of what a hostile or foreign peer can do run
 * against any release.
 */
import { decodeMulti, encode } from '@msgpack/msgpack'
import sodium from 'libsodium-wrappers'
import * as zmq from 'zeromq'
import { z85Decode } from '../lib/z85.js'

export interface RawKeys {
  publicKey: string
  secretKey: string
}

/** An envelope as decoded: `[version, type, ...fields]`. */
export type Envelope = unknown[]

export const T = {
  JOIN: 1,
  STAY: 2,
  PART: 3,
  TICK: 4,
  TOCK: 5,
  CALL: 6,
  CAST: 7,
  REPLY: 8,
  ERROR: 9,
  CHALLENGE: 10,
  CREDIT: 11,
  CANCEL: 12,
} as const

/** The JOIN proof (PROTOCOL.md 4.2): static (v1), or answering a CHALLENGE nonce for an incarnation (v2). */
export async function joinProof(
  network: string,
  dialer: RawKeys,
  listenerKey: string,
  challenge?: { nonce: Uint8Array; incarnation: Uint8Array },
): Promise<Uint8Array> {
  await sodium.ready
  const listener = z85Decode(listenerKey)
  const head = new TextEncoder().encode(`bilateral-join/${challenge === undefined ? 1 : 2}\0${network}\0`)
  const tail = challenge === undefined ? new Uint8Array(0) : new Uint8Array([...challenge.nonce, ...challenge.incarnation])
  const statement = new Uint8Array([...head, ...listener, ...tail])
  const nonce = sodium.randombytes_buf(24)
  const sealed = sodium.crypto_box_easy(statement, nonce, listener, z85Decode(dialer.secretKey))
  return new Uint8Array([...nonce, ...sealed])
}

/**
 * A JOIN envelope: `[1, 1, network, name, proof, target, maxPart, incarnation, window]`, trailing absent fields left out.
 * Announcing `callTimeout` takes a window, `[messages, bytes, callTimeout]`: one wide enough never to need a CREDIT in a test.
 */
export function joinBytes(fields: {
  network: string
  name: string
  proof?: Uint8Array
  target?: string
  incarnation?: Uint8Array
  /** Announces that this peer reads CALL deadlines and metadata and CANCEL (PROTOCOL.md 8). */
  callTimeout?: number
}): Uint8Array {
  const all: unknown[] = [
    1,
    T.JOIN,
    fields.network,
    fields.name,
    fields.proof ?? null,
    fields.target ?? null,
    null,
    fields.incarnation ?? null,
    fields.callTimeout === undefined ? null : [100_000, 2 ** 31, fields.callTimeout],
  ]
  while (all.length > 4 && all[all.length - 1] === null) all.pop()
  return encode(all)
}

/** A raw DEALER and what it receives, envelope by envelope (bodies, when packed after their envelope, appear as extra values). */
export class RawPeer {
  readonly socket: zmq.Dealer
  private readonly inbox: unknown[][] = []
  private waiting: (() => void) | undefined
  private closed = false

  constructor(endpoint: string, curve?: { keys: RawKeys; serverKey: string }) {
    this.socket = new zmq.Dealer({
      linger: 0,
      ...(curve === undefined
        ? {}
        : { curveServerKey: curve.serverKey, curvePublicKey: curve.keys.publicKey, curveSecretKey: curve.keys.secretKey }),
    })
    this.socket.connect(endpoint)
    void this.loop()
  }

  send(...parts: Uint8Array[]): Promise<void> {
    return this.socket.send(parts)
  }

  /** The values of the next message received (all its parts decoded in order), within `ms`. */
  async next(ms = 5000): Promise<unknown[]> {
    const deadline = performance.now() + ms
    while (this.inbox.length === 0) {
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`nothing received within ${ms} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiting = () => (clearTimeout(timer), resolve())
      })
    }
    return this.inbox.shift()!
  }

  /** The next envelope of type `type` (skipping others, such as a CHALLENGE), within `ms`. */
  async nextOf(type: number, ms = 5000): Promise<Envelope> {
    const deadline = performance.now() + ms
    for (;;) {
      const values = await this.next(Math.max(1, deadline - performance.now()))
      const found = values.find((v): v is Envelope => Array.isArray(v) && v[1] === type)
      if (found !== undefined) return found
    }
  }

  /**
   * Join `name` as this release's dialler does (PROTOCOL.md 10.1): the JOIN
   * (with a static proof when encrypted), then, if the listener challenges,
   * a JOIN answering it. Resolves with the STAY, or rejects with the PART.
   */
  async join(network: string, name: string, curve?: { keys: RawKeys; serverKey: string }, callTimeout?: number): Promise<Envelope> {
    const incarnation = sodium.randombytes_buf(16)
    const proof = curve === undefined ? undefined : await joinProof(network, curve.keys, curve.serverKey)
    await this.send(joinBytes({ network, name, proof, incarnation, callTimeout }))
    for (;;) {
      const values = await this.next()
      for (const v of values) {
        if (!Array.isArray(v)) continue
        if (v[1] === T.STAY) return v
        if (v[1] === T.PART) throw new Error(`refused: ${String(v[2])} ${String(v[3])}`)
        if (v[1] === T.CHALLENGE && curve !== undefined) {
          const fresh = await joinProof(network, curve.keys, curve.serverKey, { nonce: v[2] as Uint8Array, incarnation })
          await this.send(joinBytes({ network, name, proof: fresh, incarnation, callTimeout }))
        }
      }
    }
  }

  close(): void {
    this.closed = true
    this.socket.close()
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const parts = await this.socket.receive()
        const values: unknown[] = []
        for (const part of parts) {
          try {
            for (const v of decodeMulti(part)) values.push(v)
          } catch {
            values.push(part)
          }
        }
        this.inbox.push(values)
        this.waiting?.()
      }
    } catch {
      if (!this.closed) throw new Error('raw peer receive loop failed')
    }
  }
}

/** A CALL envelope and body in one part. */
export const callBytes = (id: number, method: string, args: unknown): Uint8Array =>
  new Uint8Array([...encode([1, T.CALL, id, method]), ...encode(args)])
