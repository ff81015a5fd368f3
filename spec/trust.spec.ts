import { afterEach, describe, expect, it } from 'vitest'
import { generateKeypair, type BilateralError } from '../lib/index.js'
import { Arith, closeAll, makeNode, nextEvent } from './helpers.js'
import { RawPeer, T, callBytes, joinBytes, joinProof } from './rawpeer.js'

const raws: RawPeer[] = []
afterEach(async () => {
  for (const raw of raws.splice(0)) raw.close()
  await closeAll()
})

const keys = () => generateKeypair()
const encrypted = (keypair: { publicKey: string; secretKey: string }, options: Parameters<typeof makeNode>[1] = {}) =>
  makeNode(keypair.publicKey, { keypair, ...options })

function raw(endpoint: string, own: { publicKey: string; secretKey: string }, serverKey: string): RawPeer {
  const peer = new RawPeer(endpoint, { keys: own, serverKey })
  raws.push(peer)
  return peer
}

/** Calls `id` from `peer` until an answer other than REPLY arrives or `n` have been answered; returns the answers' types. */
async function keepCalling(peer: RawPeer, n: number): Promise<number[]> {
  const seen: number[] = []
  for (let id = 1; id <= n; id++) {
    await peer.send(callBytes(id, 'Arith.SumDiff', { A: id, B: 1 }))
    const answer = (await peer.next()).find((v): v is unknown[] => Array.isArray(v))!
    seen.push(answer[1] as number)
    if (answer[1] !== T.REPLY) break
  }
  return seen
}

describe('revocation always bites', () => {
  it('a revoked key is cut within one pingInterval even if it never sends TICK, and its calls are no longer served', async () => {
    const [ks, kc] = await Promise.all([keys(), keys()])
    const allowed = new Set([kc.publicKey])
    const server = encrypted(ks, { authorizedKeys: (key) => allowed.has(key) })
    server.register(new Arith())
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    const client = raw(endpoint, kc, ks.publicKey)
    await client.join('test net', kc.publicKey, { keys: kc, serverKey: ks.publicKey })
    expect(await keepCalling(client, 5)).toEqual([T.REPLY, T.REPLY, T.REPLY, T.REPLY, T.REPLY])
    const down = nextEvent<[string, string]>(server, 'peer:down', 2000)
    const t0 = performance.now()
    allowed.delete(kc.publicKey)
    // The raw peer sends only calls, never a TICK: the sweep alone must find it.
    expect(await down).toEqual([kc.publicKey, 'AUTH'])
    expect(performance.now() - t0).toBeLessThan(1000)
    expect((await client.nextOf(T.PART))[2]).toBe('AUTH')
    const after = await keepCalling(client, 3)
    expect(after).not.toContain(T.REPLY)
    expect(server.activeConnections()).toEqual([])
  })

  it('disconnect() ends the trust dialling gave a key: its inbound link is cut, and it is refused thereafter', async () => {
    const [ks, kc] = await Promise.all([keys(), keys()])
    // Nobody is authorised; the server dials kc (at an address where nobody answers), which trusts kc's key.
    const server = encrypted(ks, { authorizedKeys: [] })
    server.register(new Arith())
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    server.connect(kc.publicKey, 'tcp://127.0.0.1:1')
    const client = raw(endpoint, kc, ks.publicKey)
    await client.join('test net', kc.publicKey, { keys: kc, serverKey: ks.publicKey })
    expect(await keepCalling(client, 2)).toEqual([T.REPLY, T.REPLY])
    const down = nextEvent<[string, string]>(server, 'peer:down', 2000)
    await server.disconnect(kc.publicKey)
    expect(await down).toEqual([kc.publicKey, 'AUTH'])
    expect(await keepCalling(client, 2)).not.toContain(T.REPLY)
    // A new connection with that key is refused during the handshake.
    const rejected = nextEvent<[string]>(server, 'auth:rejected', 2000)
    raw(endpoint, kc, ks.publicKey)
    expect(await rejected).toEqual([kc.publicKey])
  })
})

describe('a JOIN cannot be replayed', () => {
  it("an authorised node replaying another key's static JOIN bytes is refused, and served nothing as that key", async () => {
    const [ks, kc, km] = await Promise.all([keys(), keys(), keys()])
    const server = encrypted(ks)
    server.register(new Arith())
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    // C's JOIN as an earlier release sent it on every connection: the same proof bytes each time.
    const stolen = joinBytes({
      network: 'test net',
      name: kc.publicKey,
      proof: await joinProof('test net', kc, ks.publicKey),
      target: ks.publicKey,
    })
    const thief = raw(endpoint, km, ks.publicKey)
    const refused = nextEvent<[string, BilateralError]>(server, 'peer:refused', 2000)
    await thief.send(stolen)
    expect((await thief.nextOf(T.PART))[2]).toBe('AUTH')
    const [name, error] = await refused
    expect([name, error.code]).toEqual([kc.publicKey, 'AUTH'])
    expect(await keepCalling(thief, 1)).not.toContain(T.REPLY)
    expect(server.activeConnections()).toEqual([])
  })

  it("a fresh proof answering one connection's challenge is refused on another connection", async () => {
    const [ks, kc, km] = await Promise.all([keys(), keys(), keys()])
    const server = encrypted(ks)
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    // C's connection: its challenge, answered (the bytes an eavesdropper on C's side could keep), then C goes away.
    const c = raw(endpoint, kc, ks.publicKey)
    const challenge = await c.nextOf(T.CHALLENGE)
    const incarnation = new Uint8Array(16).fill(7)
    const proof = await joinProof('test net', kc, ks.publicKey, { nonce: challenge[2] as Uint8Array, incarnation })
    const answer = joinBytes({ network: 'test net', name: kc.publicKey, proof, target: ks.publicKey, incarnation })
    c.close()
    // The thief replays them on its own connection, which got its own challenge.
    const thief = raw(endpoint, km, ks.publicKey)
    await thief.nextOf(T.CHALLENGE)
    await thief.send(answer)
    expect((await thief.nextOf(T.PART))[2]).toBe('AUTH')
    expect(server.activeConnections()).toEqual([])
  })

  it('legacyJoinProofs lets a dialler of an earlier release (static proof, no incarnation) join, for a rolling upgrade', async () => {
    const [ks, kc] = await Promise.all([keys(), keys()])
    const strict = encrypted(ks)
    const strictEnd = await strict.listen('tcp://127.0.0.1:*')
    const old = joinBytes({
      network: 'test net',
      name: kc.publicKey,
      proof: await joinProof('test net', kc, ks.publicKey),
      target: ks.publicKey,
    })
    const refusedPeer = raw(strictEnd, kc, ks.publicKey)
    await refusedPeer.send(old)
    expect((await refusedPeer.nextOf(T.PART))[3]).toMatch(/earlier release.*legacyJoinProofs/)
    await strict.close()
    const lenient = encrypted(ks, { legacyJoinProofs: true })
    const lenientEnd = await lenient.listen('tcp://127.0.0.1:*')
    const oldPeer = raw(lenientEnd, kc, ks.publicKey)
    await oldPeer.send(old)
    expect((await oldPeer.nextOf(T.STAY))[3]).toBe(ks.publicKey)
  })
})
