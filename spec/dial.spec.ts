// dial(address): connecting to a node by its address alone, its name learnt
// from its STAY. Real nodes on loopback.
import { afterEach, describe, expect, it } from 'vitest'
import { Dealer, Router } from 'zeromq'
import { BilateralError, generateKeypair, type Bilateral } from '../lib/index.js'
import { Part, encodeJoin, encodePart, encodeStay } from '../lib/wire/frames.js'
import { closeAll, makeNode, nextEvent } from './helpers.js'

afterEach(closeAll)

const arith = { SumDiff: (a: { A: number; B: number }) => ({ S: a.A + a.B, D: a.A - a.B }) }

describe('dial(address)', () => {
  it('resolves with the name of the node listening there, which is then a peer like any other', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register(arith, 'Arith')
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    expect(await a.dial(endpoint, { timeout: 5000 })).toBe('b')
    expect(a.links()).toEqual([{ peer: 'b', direction: 'outbound' }])
    expect(a.peers()).toEqual([expect.objectContaining({ name: 'b', state: 'up', direction: 'outbound', address: endpoint })])
    expect(await a.request('b', 'Arith.SumDiff', { A: 5, B: 3 })).toEqual({ S: 8, D: 2 })
    // Dialling the same address again gives the same peer, not a second dial.
    expect(await a.dial(endpoint, { timeout: 5000 })).toBe('b')
    const down = nextEvent(b, 'peer:down')
    await a.disconnect('b')
    expect((await down)[0]).toBe('a')
  })

  it('an address dialled under its name already resolves with that name', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    a.connect('b', endpoint)
    expect(await a.dial(endpoint, { timeout: 5000 })).toBe('b')
    expect(a.peers().map((p) => p.name)).toEqual(['b'])
  })

  it('shows the dial under its address until named, and gives up after its timeout naming what it met, dialling no more', async () => {
    const a = makeNode('a')
    const dialled = a.dial('tcp://127.0.0.1:1', { timeout: 400 })
    expect(a.peers()).toEqual([expect.objectContaining({ name: 'tcp://127.0.0.1:1', direction: 'outbound', address: 'tcp://127.0.0.1:1' })])
    const error = await dialled.then(
      () => expect.fail('dial should reject'),
      (e: unknown) => e as BilateralError,
    )
    expect(error).toBeInstanceOf(BilateralError)
    expect(error.code).toBe('TIMEOUT')
    expect(error.message).toMatch(/^no node answered at tcp:\/\/127\.0\.0\.1:1 after 400 ms \(.+\)$/)
    expect(a.peers()).toEqual([])
    expect(a.stats().peers).toBe(0)
  })

  it('a refusal retrying cannot fix rejects at once, and the dial stops', async () => {
    const a = makeNode('a')
    const other = makeNode('other', { network: 'elsewhere' })
    const endpoint = await other.listen('tcp://127.0.0.1:*')
    const started = performance.now()
    await expect(a.dial(endpoint, { timeout: 20_000 })).rejects.toMatchObject({ code: 'NETWORK_MISMATCH' })
    expect(performance.now() - started).toBeLessThan(5000)
    expect(a.peers()).toEqual([])
  })

  it('once named it redials that name: another node at the address is WRONG_NAME', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    expect(await a.dial(endpoint, { timeout: 5000 })).toBe('b')
    const down = nextEvent(a, 'peer:down')
    await b.close()
    await down
    const refused = nextEvent<[string, BilateralError]>(a, 'peer:refused', 10_000)
    const impostor = makeNode('c')
    await impostor.listen(endpoint)
    const [peer, error] = await refused
    expect(peer).toBe('b')
    expect(error.code).toBe('WRONG_NAME')
  })

  it('two nodes dialling each other, one by address alone, agree on one link that carries calls both ways', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    a.register(arith, 'Arith')
    b.register(arith, 'Arith')
    const [ea, eb] = await Promise.all([a.listen('tcp://127.0.0.1:*'), b.listen('tcp://127.0.0.1:*')])
    b.connect('a', ea)
    expect(await a.dial(eb, { timeout: 5000 })).toBe('b')
    await b.waitForPeers(['a'], { timeout: 5000 })
    expect(await a.request('b', 'Arith.SumDiff', { A: 2, B: 1 })).toEqual({ S: 3, D: 1 })
    expect(await b.request('a', 'Arith.SumDiff', { A: 2, B: 1 })).toEqual({ S: 3, D: 1 })
    expect(a.activeConnections()).toEqual(['b'])
    expect(b.activeConnections()).toEqual(['a'])
  })

  it('refuses what it cannot do: an encrypted node (CURVE needs the key first), an address without tcp://, an unknown option', async () => {
    const keys = await generateKeypair()
    const e = makeNode(keys.publicKey, { keypair: keys, name: undefined })
    await expect(e.dial('tcp://127.0.0.1:1')).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining('connect(key,'),
    })
    const a = makeNode('a')
    await expect(a.dial('127.0.0.1:7000')).rejects.toThrow(/tcp:\/\//)
    // @ts-expect-error a misspelt option
    await expect(a.dial('tcp://127.0.0.1:1', { timout: 5 })).rejects.toThrow(/timeout/)
    expect(a.peers()).toEqual([])
  })

  it.each([
    ['our own name', 'a'],
    ['an empty name', ''],
    ['a name of 256 bytes', 'x'.repeat(256)],
  ])('a listener answering with %s is refused, and the dial stops', async (_, name) => {
    const router = new Router({ linger: 0 })
    await router.bind('tcp://127.0.0.1:*')
    void (async () => {
      for await (const [id] of router)
        await router.send([id!, encodeStay({ network: 'test', name, incarnation: new Uint8Array(16).fill(7) })])
    })().catch(() => {})
    try {
      const a = makeNode('a', { network: 'test' })
      await expect(a.dial(router.lastEndpoint!, { timeout: 10_000 })).rejects.toMatchObject({ code: 'WRONG_NAME' })
      expect(a.peers()).toEqual([])
      expect(a.activeConnections()).toEqual([])
    } finally {
      router.close()
    }
  })
})

describe('dial(address) meeting a node we are linked to already', () => {
  /** Every peer:down a node reports, to check nothing flapped. */
  const downs = (node: Bilateral): string[] => {
    const seen: string[] = []
    node.on('peer:down', (peer: string, reason: string) => seen.push(`${peer} ${reason}`))
    return seen
  }

  it('that dialled us: its CROSS names it, so the dial resolves with its name at once, and the link it has stays', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const [ea, eb] = await Promise.all([a.listen('tcp://127.0.0.1:*'), b.listen('tcp://127.0.0.1:*')])
    b.connect('a', ea)
    await a.waitForPeers(['b'], { timeout: 5000 })
    const seen = downs(b)
    const started = performance.now()
    expect(await a.dial(eb, { timeout: 10_000 })).toBe('b')
    expect(performance.now() - started).toBeLessThan(5000)
    expect(a.links()).toEqual([{ peer: 'b', direction: 'inbound' }])
    expect(a.peers().map((p) => p.name)).toEqual(['b'])
    expect(seen).toEqual([])
  })

  it('that we dialled under another spelling of its address: its DUPLICATE names it, and the dial resolves with that', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const eb = await b.listen('tcp://127.0.0.1:*')
    expect(await a.dial(eb, { timeout: 5000 })).toBe('b')
    const other = eb.replace('127.0.0.1', 'localhost')
    expect(await a.dial(other, { timeout: 10_000 })).toBe('b')
    expect(a.links()).toEqual([{ peer: 'b', direction: 'outbound' }])
    expect(a.peers().map((p) => p.name)).toEqual(['b'])
  })

  it('two dials of one address at once both resolve with its name', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const eb = await b.listen('tcp://127.0.0.1:*')
    expect(await Promise.all([a.dial(eb, { timeout: 5000 }), a.dial(eb, { timeout: 5000 })])).toEqual(['b', 'b'])
  })

  it('a dial racing a connect() of the same address resolves with the name, and the peer sees no down', async () => {
    for (let round = 0; round < 4; round++) {
      const a = makeNode(`a${round}`)
      const b = makeNode(`b${round}`)
      const eb = await b.listen('tcp://127.0.0.1:*')
      const seen = downs(b)
      const dialled = a.dial(eb, { timeout: 5000 })
      a.connect(`b${round}`, eb)
      expect(await dialled).toBe(`b${round}`)
      expect(await a.request(`b${round}`, '$node.Ping', undefined)).toMatchObject({ name: `b${round}` })
      expect(a.peers().map((p) => p.name)).toEqual([`b${round}`])
      expect(seen).toEqual([])
    }
  })

  it("a stranger's JOIN claiming the dialled address as its name does not cancel the dial", async () => {
    const a = makeNode('a')
    const ea = await a.listen('tcp://127.0.0.1:*')
    const target = 'tcp://127.0.0.1:1'
    const dialled = a.dial(target, { timeout: 1000 })
    const raw = new Dealer({ linger: 0 })
    try {
      raw.connect(ea)
      await raw.send([encodeJoin({ network: 'not ours', name: target })])
      await expect(dialled).rejects.toMatchObject({ code: 'TIMEOUT' })
    } finally {
      raw.close()
    }
  })

  it('a listener answering under the name of a peer linked to us is refused DUPLICATE, and that peer keeps its link', async () => {
    const a = makeNode('a')
    const c = makeNode('c')
    c.connect('a', await a.listen('tcp://127.0.0.1:*'))
    await a.waitForPeers(['c'], { timeout: 5000 })
    const router = new Router({ linger: 0 })
    await router.bind('tcp://127.0.0.1:*')
    void (async () => {
      for await (const [id] of router)
        await router.send([id!, encodeStay({ network: 'test net', name: 'c', incarnation: new Uint8Array(16).fill(7) })])
    })().catch(() => {})
    try {
      const refused = nextEvent<[string, BilateralError]>(a, 'peer:refused')
      const dialled = a.dial(router.lastEndpoint!, { timeout: 800 })
      expect((await refused)[1].code).toBe('DUPLICATE')
      await expect(dialled).rejects.toMatchObject({ code: 'TIMEOUT' })
      expect(a.links()).toEqual([{ peer: 'c', direction: 'inbound' }])
      expect(await a.request('c', '$node.Ping', undefined)).toMatchObject({ name: 'c' })
    } finally {
      router.close()
    }
  })

  it.each([
    ['names no one (a listener of the previous release)', undefined],
    ['names a peer we are not linked to', 'nobody'],
  ])('a CROSS that %s leaves the dial ALREADY_CONNECTED, at once', async (_, name) => {
    const router = new Router({ linger: 0 })
    await router.bind('tcp://127.0.0.1:*')
    void (async () => {
      for await (const [id] of router) await router.send([id!, encodePart(Part.CROSS, 'the connection we dialled is live', name)])
    })().catch(() => {})
    try {
      const a = makeNode('a')
      const started = performance.now()
      await expect(a.dial(router.lastEndpoint!, { timeout: 10_000 })).rejects.toMatchObject({ code: 'ALREADY_CONNECTED' })
      expect(performance.now() - started).toBeLessThan(5000)
      expect(a.peers()).toEqual([])
    } finally {
      router.close()
    }
  })
})
