import * as zmq from 'zeromq'
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeypair, type BilateralError, type CallContext, type Keypair } from '../lib/index.js'
import { makeJoinProof } from '../lib/crypto.js'
import { Codec } from '../lib/wire/codec.js'
import { encodeJoin, FrameType, type Frame } from '../lib/wire/frames.js'
import { Arith, closeAll, deferred, makeNode, nextEvent, pair } from './helpers.js'
import { Relay } from './relay.js'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
  await closeAll()
})

const encrypted = (keypair: Keypair, options: Parameters<typeof makeNode>[1] = {}) => makeNode(keypair.publicKey, { keypair, ...options })

/** A plain ZeroMQ DEALER (not our node) that completes a CURVE handshake with `serverKey` at `endpoint` using `keys`. */
function rawCurveDealer(endpoint: string, serverKey: string, keys: Keypair): zmq.Dealer {
  const socket = new zmq.Dealer({ curveServerKey: serverKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, linger: 0 })
  cleanups.push(() => socket.close())
  socket.connect(endpoint)
  return socket
}

/** The next frame a raw socket receives other than a CHALLENGE (an encrypted listener sends one on every connection). */
async function nextControl(socket: zmq.Dealer): Promise<Frame> {
  const codec = new Codec()
  for (;;) {
    const frames = codec.decodeMessage(await socket.receive()).filter((f) => f.type !== FrameType.CHALLENGE)
    if (frames.length > 0) return frames[0]!
  }
}

describe('encrypted nodes', () => {
  it('call each other in both directions, named by their public keys', async () => {
    const [ka, kb] = await Promise.all([generateKeypair(), generateKeypair()])
    const alpha = encrypted(ka)
    const beta = encrypted(kb)
    expect(alpha.name).toBe(ka.publicKey)
    expect(alpha.encrypted).toBe(true)
    const who = { Who: (_: unknown, ctx: CallContext) => ctx.from }
    alpha.register(who, 'Id')
    beta.register(who, 'Id')
    await pair(alpha, beta)
    expect(await alpha.call([], 'Id.Who')).toEqual([{ from: kb.publicKey, ok: true, reply: ka.publicKey }])
    expect(await beta.call([], 'Id.Who')).toEqual([{ from: ka.publicKey, ok: true, reply: kb.publicKey }])
  })

  it('a key outside authorizedKeys is refused in the handshake and reaches no handler', async () => {
    const [ks, kfriend, kstranger] = await Promise.all([generateKeypair(), generateKeypair(), generateKeypair()])
    const server = encrypted(ks, { authorizedKeys: [kfriend.publicKey] })
    let served = 0
    server.register({ Touch: () => ++served }, 'Svc')
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    const stranger = encrypted(kstranger)
    const rejected = nextEvent<[string]>(server, 'auth:rejected')
    const refused = nextEvent<[string, BilateralError]>(stranger, 'peer:refused')
    stranger.connect(ks.publicKey, endpoint)
    expect(await rejected).toEqual([kstranger.publicKey])
    const [name, error] = await refused
    expect([name, error.code]).toEqual([ks.publicKey, 'AUTH'])
    // The friend gets in and is served; the stranger never became active.
    const friend = encrypted(kfriend)
    friend.connect(ks.publicKey, endpoint)
    await friend.waitForPeers([ks.publicKey], { timeout: 5000 })
    expect(await friend.call([], 'Svc.Touch')).toEqual([{ from: ks.publicKey, ok: true, reply: 1 }])
    expect(server.activeConnections()).toEqual([kfriend.publicKey])
    expect(stranger.activeConnections()).toEqual([])
    expect(served).toBe(1)
  })

  it('revoking a key (the authorizedKeys predicate turns false) drops its live link on both sides with AUTH', async () => {
    const [ks, kc] = await Promise.all([generateKeypair(), generateKeypair()])
    const allowed = new Set([kc.publicKey])
    const server = encrypted(ks, { authorizedKeys: (key) => allowed.has(key) })
    const client = encrypted(kc)
    server.register(new Arith(), 'Arith')
    await pair(client, server)
    const downs = Promise.all([nextEvent<[string, string]>(server, 'peer:down'), nextEvent<[string, string]>(client, 'peer:down')])
    const refused = nextEvent<[string, BilateralError]>(client, 'peer:refused')
    allowed.delete(kc.publicKey)
    // Checked at the client's next ping.
    expect(await downs).toEqual([
      [kc.publicKey, 'AUTH'],
      [ks.publicKey, 'AUTH'],
    ])
    expect((await refused)[1].code).toBe('AUTH')
    // Its re-JOINs over the still-open connection are refused too.
    const again = await nextEvent<[string, BilateralError]>(client, 'peer:refused', 5000)
    expect(again[1].code).toBe('AUTH')
    expect(server.activeConnections()).toEqual([])
    expect(await client.call([ks.publicKey], 'Arith.SumDiff', { A: 1, B: 1 })).toMatchObject([
      { ok: false, error: { code: 'NOT_CONNECTED' } },
    ])
  })

  it('a key this node connects to is trusted for that connection even outside authorizedKeys', async () => {
    const [ka, kb] = await Promise.all([generateKeypair(), generateKeypair()])
    // Each only authorises nobody, yet each dials the other: both links are admitted.
    const alpha = encrypted(ka, { authorizedKeys: [] })
    const beta = encrypted(kb, { authorizedKeys: [] })
    const [ea, eb] = await Promise.all([alpha.listen('tcp://127.0.0.1:*'), beta.listen('tcp://127.0.0.1:*')])
    const rejected: string[] = []
    alpha.on('auth:rejected', (k) => rejected.push(k))
    beta.on('auth:rejected', (k) => rejected.push(k))
    alpha.connect(kb.publicKey, eb)
    beta.connect(ka.publicKey, ea)
    await Promise.all([alpha.waitForPeers([kb.publicKey], { timeout: 5000 }), beta.waitForPeers([ka.publicKey], { timeout: 5000 })])
    beta.register({ Ping: () => 'pong' }, 'Svc')
    expect(await alpha.call([], 'Svc.Ping')).toEqual([{ from: kb.publicKey, ok: true, reply: 'pong' }])
    expect(rejected).toEqual([])
  })

  it('authorizedKeys may be a predicate', async () => {
    const [ks, kc] = await Promise.all([generateKeypair(), generateKeypair()])
    const asked: string[] = []
    const server = encrypted(ks, { authorizedKeys: (key) => (asked.push(key), false) })
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    const client = encrypted(kc)
    const rejected = nextEvent<[string]>(server, 'auth:rejected')
    client.connect(ks.publicKey, endpoint)
    await rejected
    expect(asked).toContain(kc.publicKey)
  })

  it('a valid key claiming another key as its name is refused while the owner keeps working', async () => {
    const [ks, kowner, kthief] = await Promise.all([generateKeypair(), generateKeypair(), generateKeypair()])
    const server = encrypted(ks)
    server.register({ Who: (_: unknown, ctx: CallContext) => ctx.from }, 'Id')
    const owner = encrypted(kowner)
    owner.register({ Secret: () => 'owner only' }, 'Vault')
    const endpoint = await pair(owner, server)

    // The thief completes a CURVE handshake with its own (valid) key, then claims the owner's name.
    const thief = rawCurveDealer(endpoint, ks.publicKey, kthief)
    for (const proof of [undefined, makeJoinProof('test net', kthief.secretKey, ks.publicKey), new Uint8Array(64)]) {
      const refused = nextEvent<[string, BilateralError]>(server, 'peer:refused')
      await thief.send([encodeJoin({ network: 'test net', name: kowner.publicKey, proof })])
      expect(await nextControl(thief)).toMatchObject({ type: FrameType.PART, reason: 'AUTH' })
      const [name, error] = await refused
      expect([name, error.code]).toEqual([kowner.publicKey, 'AUTH'])
    }
    expect(server.activeConnections()).toEqual([kowner.publicKey])
    expect(await server.call([kowner.publicKey], 'Vault.Secret')).toEqual([{ from: kowner.publicKey, ok: true, reply: 'owner only' }])
    expect(await owner.call([], 'Id.Who')).toEqual([{ from: ks.publicKey, ok: true, reply: kowner.publicKey }])
  })

  it('an allowed key cannot bring in a key outside authorizedKeys by naming it in JOIN, even with its valid proof', async () => {
    const [ks, kallowed, koutsider] = await Promise.all([generateKeypair(), generateKeypair(), generateKeypair()])
    const server = encrypted(ks, { authorizedKeys: [kallowed.publicKey] })
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    const sock = rawCurveDealer(endpoint, ks.publicKey, kallowed)
    const refused = nextEvent<[string, BilateralError]>(server, 'peer:refused')
    await sock.send([
      encodeJoin({
        network: 'test net',
        name: koutsider.publicKey,
        proof: makeJoinProof('test net', koutsider.secretKey, ks.publicKey),
        target: ks.publicKey,
      }),
    ])
    expect(await nextControl(sock)).toMatchObject({ type: FrameType.PART, reason: 'AUTH' })
    const [name, error] = await refused
    expect([name, error.code]).toEqual([koutsider.publicKey, 'AUTH'])
    expect(server.activeConnections()).toEqual([])
  })

  for (const [dialler, listener] of [
    ['plaintext', 'encrypted'],
    ['encrypted', 'plaintext'],
  ] as const) {
    it(`a ${dialler} node dialling a ${listener} one never connects, and both say why`, async () => {
      const [kd, kl] = await Promise.all([generateKeypair(), generateKeypair()])
      const d = dialler === 'plaintext' ? makeNode('plain-d') : encrypted(kd)
      const l = listener === 'plaintext' ? makeNode(kl.publicKey) : encrypted(kl)
      const endpoint = await l.listen('tcp://127.0.0.1:*')
      const there = nextEvent<[BilateralError]>(l, 'handshake:error')
      const here = nextEvent<[string, BilateralError]>(d, 'peer:refused')
      d.connect(kl.publicKey, endpoint)
      const [[remote], [, local]] = await Promise.all([there, here])
      expect(remote.code).toBe('HANDSHAKE')
      expect(local.code).toBe('HANDSHAKE')
      expect(d.activeConnections()).toEqual([])
      expect(l.activeConnections()).toEqual([])
    })
  }

  it('neither method names nor arguments can be read off the wire, unlike in plaintext', async () => {
    const marker = 'MARKER-7f3a9c'
    async function capture(makePair: () => Promise<[ReturnType<typeof makeNode>, ReturnType<typeof makeNode>]>): Promise<Buffer> {
      const [client, server] = await makePair()
      server.register(new Arith(), 'SecretiveArith')
      server.register({ Echo: (x: unknown) => x }, 'Echo')
      const endpoint = await server.listen('tcp://127.0.0.1:*')
      const relay = await Relay.start(endpoint)
      cleanups.push(() => relay.close())
      client.connect(server.name, relay.address)
      await client.waitForPeers([server.name], { timeout: 5000 })
      expect(await client.call([], 'SecretiveArith.SumDiff', { A: 1, B: 2 })).toMatchObject([{ ok: true }])
      expect(await client.call([], 'Echo.Echo', marker)).toMatchObject([{ ok: true, reply: marker }])
      return relay.bytes()
    }
    const plain = await capture(async () => [makeNode('plain-client'), makeNode('plain-server')])
    expect(plain.includes('SecretiveArith.SumDiff')).toBe(true)
    expect(plain.includes(marker)).toBe(true)
    const [kc, ks] = await Promise.all([generateKeypair(), generateKeypair()])
    const sealed = await capture(async () => [encrypted(kc), encrypted(ks)])
    expect(sealed.length).toBeGreaterThan(0)
    expect(sealed.includes('SecretiveArith')).toBe(false)
    expect(sealed.includes(marker)).toBe(false)
    expect(sealed.includes('test net')).toBe(false)
  })

  it('refuses a keypair whose halves do not belong together, a foreign name, and peers not named by key', async () => {
    const [k1, k2] = await Promise.all([generateKeypair(), generateKeypair()])
    expect(() => makeNode('x', { keypair: { publicKey: k1.publicKey, secretKey: k2.secretKey } })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    )
    expect(() => makeNode('not-the-key', { keypair: k1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => makeNode('plain', { authorizedKeys: [k1.publicKey] })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    const node = encrypted(k1)
    expect(() => node.connect('beta', 'tcp://127.0.0.1:1')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })
})

describe('exposure control on encrypted nodes', () => {
  it('rules name peers by public key, and per-method rules hold when the listener calls back', async () => {
    const [kh, kf, ko] = await Promise.all([generateKeypair(), generateKeypair(), generateKeypair()])
    const hub = encrypted(kh)
    const friend = encrypted(kf)
    const other = encrypted(ko)
    hub.register(new Arith(), 'Private', { peers: [kf.publicKey] })
    class Account {
      Balance() {
        return 10
      }
      Withdraw() {
        return 'gone'
      }
    }
    friend.register(new Account(), 'Account', { methods: ['Balance'] })
    await pair(friend, hub)
    await pair(other, hub)
    expect((await friend.call([kh.publicKey], 'Private.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({ ok: true })
    expect((await other.call([kh.publicKey], 'Private.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({
      ok: false,
      error: { code: 'NO_SUCH_METHOD' },
    })
    // The listening hub calls back the node that dialled it.
    expect((await hub.call([kf.publicKey], 'Account.Balance'))[0]).toMatchObject({ ok: true, reply: 10 })
    expect((await hub.call([kf.publicKey], 'Account.Withdraw'))[0]).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
  })
})

describe('exposure control', () => {
  async function triangle(options: Parameters<typeof makeNode>[1] = {}) {
    const hub = makeNode('hub', options)
    const friend = makeNode('friend')
    const other = makeNode('other')
    await pair(friend, hub)
    await pair(other, hub)
    return { hub, friend, other }
  }

  it('a receiver limited to some peers is NO_SUCH_METHOD for the rest', async () => {
    const { hub, friend, other } = await triangle()
    hub.register(new Arith(), 'Private', { peers: ['friend'] })
    expect((await friend.call(['hub'], 'Private.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({ ok: true })
    expect((await other.call(['hub'], 'Private.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({
      ok: false,
      error: { code: 'NO_SUCH_METHOD' },
    })
  })

  it('exposure works in the reverse direction too: the dialled node calling back', async () => {
    const { hub, friend, other } = await triangle()
    friend.register(new Arith(), 'Back', { peers: (peer) => peer === 'hub' })
    other.register(new Arith(), 'Back', { peers: ['somebody-else'] })
    const results = await hub.call([], 'Back.SumDiff', { A: 2, B: 1 })
    expect(results.find((r) => r.from === 'friend')).toMatchObject({ ok: true, reply: { S: 3, D: 1 } })
    expect(results.find((r) => r.from === 'other')).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
  })

  it('methods exposes only the listed methods', async () => {
    const { hub, friend } = await triangle()
    class Account {
      Balance() {
        return 10
      }
      Withdraw() {
        return 'gone'
      }
    }
    expect(hub.register(new Account(), 'Account', { methods: ['Balance'] })).toEqual(['Account.Balance'])
    expect((await friend.call(['hub'], 'Account.Balance'))[0]).toMatchObject({ ok: true, reply: 10 })
    expect((await friend.call(['hub'], 'Account.Withdraw'))[0]).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
    expect(() => hub.register(new Account(), 'Other', { methods: ['Nope'] })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('defaultExposure applies to receivers registered without a rule, and casts obey it too', async () => {
    const { hub, friend, other } = await triangle({ defaultExposure: ['friend'] })
    const got = deferred<string>()
    hub.register({ Note: (_: unknown, ctx: CallContext) => got.resolve(ctx.from) }, 'Log')
    hub.register(new Arith(), 'Open', { peers: () => true })
    await other.cast(['hub'], 'Log.Note')
    await friend.cast(['hub'], 'Log.Note')
    expect(await got.promise).toBe('friend')
    expect((await other.call(['hub'], 'Open.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({ ok: true })
    expect((await other.call(['hub'], 'Log.Note'))[0]).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
  })
})
