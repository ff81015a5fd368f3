// Seeds given as host names (every address tried, resolved again as the seed
// comes due, through an injected resolver: no DNS server), and encrypted
// meshes: members dialled by key, records of keys authorizedKeys refuses kept
// nowhere, and a record pointing a member's key at another node's address
// diverting nothing and costing a bounded number of dials. Real nodes on
// loopback addresses (127.0.0.1 to 127.0.0.3 share one port).
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Bilateral, generateKeypair, type BilateralOptions, type Keypair } from '../lib/index.js'
import { closeAll, ensureBuilt, heard, makeNode, until, within } from './helpers.js'

beforeAll(ensureBuilt)
afterEach(closeAll)

const member = (name: string, seeds: string[], options: Partial<BilateralOptions> = {}): Bilateral =>
  makeNode(name, { seeds, gossipInterval: 100, ...options })

/** Resolves once `node` has a link to `name`. */
function linked(node: Bilateral, name: string, ms = 10_000): Promise<void> {
  if (node.activeConnections().includes(name)) return Promise.resolve()
  return within(
    new Promise<void>((resolve) => {
      const up = (peer: string): void => {
        if (peer !== name) return
        node.off('peer:up', up)
        resolve()
      }
      node.on('peer:up', up)
    }),
    ms,
    `${node.name} linked to ${name.slice(0, 8)}`,
  )
}

const portOf = (endpoint: string): string => endpoint.slice(endpoint.lastIndexOf(':') + 1)

describe('seeds given as host names', () => {
  it('every address the name resolves to is tried, and the name is resolved again as the seed comes due', async () => {
    const a = member('a', [])
    const port = portOf(await a.listen('tcp://127.0.0.1:*'))
    // b is the first member of a mesh of its own, on the same port of another loopback address.
    const b = member('b', [])
    await b.listen(`tcp://127.0.0.2:${port}`)
    // The name stands for a (and for 127.0.0.3, where nothing listens) at first; later for a and b.
    let answer = ['127.0.0.3', '127.0.0.1']
    const asked: string[] = []
    const resolver = async (host: string): Promise<string[]> => {
      asked.push(host)
      return answer
    }
    const c = member('c', [`tcp://seeds.test:${port}`], { resolver })
    await heard(c, 'join', 'a')
    expect(c.members().some((m) => m.name === 'b')).toBe(false)
    answer = ['127.0.0.1', '127.0.0.2']
    // Resolved again within 10 rounds of reaching a: c dials b, and a hears of b through c.
    await heard(c, 'join', 'b')
    await heard(a, 'join', 'b')
    expect(asked.length).toBeGreaterThanOrEqual(2)
    expect(asked.every((h) => h === 'seeds.test')).toBe(true)
  })

  it('a name that does not resolve yet is tried again with back-off; a resolver answering nonsense is survived', async () => {
    const a = member('a', [])
    const port = portOf(await a.listen('tcp://127.0.0.1:*'))
    let calls = 0
    const resolver = async (): Promise<string[]> => {
      calls++
      if (calls === 1) throw new Error('ENOTFOUND seeds.test')
      if (calls === 2) return ['not an address', 7 as unknown as string]
      return ['127.0.0.1']
    }
    const c = member('c', [`tcp://seeds.test:${port}`], { resolver })
    await heard(c, 'join', 'a')
    expect(calls).toBeGreaterThanOrEqual(3)
  })

  it('a seed that is down at start is joined once it listens', async () => {
    // A port nobody listens on yet: taken from a server that is then closed.
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const c = member('c', [`tcp://127.0.0.1:${port}`])
    const a = member('a', [])
    // c is dialling the seed, which nothing answers yet, before a listens there.
    const seed = `tcp://127.0.0.1:${port}`
    await until(() => c.peers().some((p) => p.name === seed && p.state === 'connecting'), 5000, 'c dialling the seed')
    expect(c.activeConnections()).toEqual([])
    await a.listen(`tcp://127.0.0.1:${port}`)
    await heard(c, 'join', 'a')
    await linked(c, 'a')
  })

  it('a resolver that never answers holds nothing up: the seed is tried again, and close() leaves nothing behind', async () => {
    const a = member('a', [])
    const port = portOf(await a.listen('tcp://127.0.0.1:*'))
    let calls = 0
    const resolver = (): Promise<string[]> => (++calls === 1 ? new Promise<string[]>(() => undefined) : Promise.resolve(['127.0.0.1']))
    const c = member('c', [`tcp://seeds.test:${port}`], { resolver })
    await heard(c, 'join', 'a', 15_000)
    expect(calls).toBeGreaterThanOrEqual(2)
  })

  it("a stranger's JOIN refused under a member's name does not make us drop that member", async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    // m advertises an address where nothing listens: b keeps dialling it (connecting), as it should.
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const nowhere = `tcp://127.0.0.1:${(probe.address() as AddressInfo).port}`
    await new Promise((resolve) => probe.close(resolve))
    const m = member('m', [at], { advertise: [nowhere], gossipInterval: 5000 })
    const b = member('b', [at])
    const bAt = await b.listen('tcp://127.0.0.1:*')
    const connecting = (): boolean => b.members().some((x) => x.name === 'm' && x.state === 'connecting')
    await until(connecting, 10_000, 'b dialling m')
    // A stranger says it is m, on another network: b refuses its JOIN (NETWORK_MISMATCH), and that is all.
    const stranger = makeNode('m', { network: 'evil net' })
    const refused = new Promise<void>((resolve) => b.once('peer:refused', () => resolve()))
    stranger.connect('b', bAt)
    await within(refused, 5000, 'b refusing the stranger')
    expect(connecting()).toBe(true)
    expect(m.activeConnections()).toContain('a')
  })

  it('options are checked: a resolver is a function, and is for seeds', () => {
    expect(() => new Bilateral({ network: 'n', name: 'x', seeds: [], resolver: 'dns' as never })).toThrow(/resolver must be a function/)
    expect(() => new Bilateral({ network: 'n', name: 'x', resolver: async () => [] })).toThrow(/give seeds too/)
  })
})

describe('encrypted meshes', () => {
  const keys = (n: number): Promise<Keypair[]> => Promise.all(Array.from({ length: n }, () => generateKeypair()))
  const node = (kp: Keypair, seeds: string[], authorizedKeys?: string[]): Bilateral =>
    makeNode(kp.publicKey, { keypair: kp, seeds, gossipInterval: 100, ...(authorizedKeys === undefined ? {} : { authorizedKeys }) })

  it('members given one KEY@address seed each form a full mesh by key', async () => {
    const [ka, kb, kc] = (await keys(3)) as [Keypair, Keypair, Keypair]
    const all = [ka.publicKey, kb.publicKey, kc.publicKey]
    const a = node(ka, [], all)
    const at = await a.listen('tcp://127.0.0.1:*')
    const b = node(kb, [`${ka.publicKey}@${at}`], all)
    await b.listen('tcp://127.0.0.1:*')
    const c = node(kc, [`${ka.publicKey}@${at}`], all)
    await c.listen('tcp://127.0.0.1:*')
    // b and c know each other only through a.
    await Promise.all([linked(b, kc.publicKey), linked(c, kb.publicKey)])
    expect(b.members().find((m) => m.name === kc.publicKey)).toMatchObject({ state: 'up' })
  })

  for (const aDials of [false, true]) {
    it(`a key authorizedKeys stops admitting is forgotten from the table and its link cut (${aDials ? 'a dialled it, its seed' : 'it dialled a'}), though other members go on gossiping it`, async () => {
      const [ka, kb, kc] = (await keys(3)) as [Keypair, Keypair, Keypair]
      const all = [ka.publicKey, kb.publicKey, kc.publicKey]
      let revoked = false
      const authorizedKeys = (key: string): boolean => all.includes(key) && !(revoked && key === kc.publicKey)
      // The first member is a, or (aDials) c, a's seed: then a dials c by key, the trust that gives c ending with the revocation.
      const c = aDials ? node(kc, [], all) : undefined
      const cAt = c === undefined ? undefined : await c.listen('tcp://127.0.0.1:*')
      const a = makeNode(ka.publicKey, {
        keypair: ka,
        seeds: cAt === undefined ? [] : [`${kc.publicKey}@${cAt}`],
        gossipInterval: 100,
        authorizedKeys,
      })
      const at = await a.listen('tcp://127.0.0.1:*')
      const first = cAt === undefined ? `${ka.publicKey}@${at}` : `${kc.publicKey}@${cAt}`
      const b = node(kb, [first], all)
      await b.listen('tcp://127.0.0.1:*')
      const member = c ?? node(kc, [first], all)
      if (c === undefined) await member.listen('tcp://127.0.0.1:*')
      await Promise.all([linked(a, kc.publicKey), linked(b, kc.publicKey), linked(a, kb.publicKey)])
      const left = heard(a, 'leave', kc.publicKey)
      const cut = new Promise<string>((resolve) => member.on('peer:down', (peer, reason) => peer === ka.publicKey && resolve(reason)))
      revoked = true
      expect((await left).why).toBe('its key is no longer authorised here')
      await until(() => !a.activeConnections().includes(kc.publicKey), 5000, 'a cuts its link to c')
      // c is told why, whichever side dialled.
      expect(await within(cut, 5000, 'c sees a go')).toBe('AUTH')
      // b still admits c and gossips it to a every round: a keeps it out, and does not dial it (nor its seed) again.
      const refused = a.stats().members!.recordsRefused
      await until(() => a.stats().members!.recordsRefused > refused + 2, 5000, 'a refuses c as b gossips it')
      // A seed not up comes due again within 10 rounds: a revoked one is not dialled.
      const rounds = a.stats().members!.rounds
      await until(() => a.stats().members!.rounds > rounds + 12, 5000, 'a runs a dozen rounds')
      expect(a.members().some((m) => m.name === kc.publicKey)).toBe(false)
      expect(a.activeConnections()).not.toContain(kc.publicKey)
      expect(a.peers().find((p) => p.name === kc.publicKey && p.state !== 'down')).toBeUndefined()
      expect(b.members().find((m) => m.name === kc.publicKey)).toMatchObject({ state: 'up' })
    })
  }

  it("a record of a key authorizedKeys refuses is kept nowhere and never dialled; one pointing a member's key at another node's address diverts nothing, and is lost after its dial is refused", async () => {
    const [ka, kb, kh, kx, kd] = (await keys(5)) as [Keypair, Keypair, Keypair, Keypair, Keypair]
    // d is authorised but not running; x is not authorised at all.
    const authorised = [ka.publicKey, kb.publicKey, kh.publicKey, kd.publicKey]
    const a = node(ka, [], authorised)
    const at = await a.listen('tcp://127.0.0.1:*')
    // h is a peer with a key a admits, that lies (not a member itself, so only a acts on its records).
    const h = makeNode(kh.publicKey, { keypair: kh, authorizedKeys: authorised })
    const hAt = await h.listen('tcp://127.0.0.1:*')
    h.connect(ka.publicKey, at)
    await Promise.all([linked(a, kh.publicKey), linked(h, ka.publicKey)])
    const handshakes: string[] = []
    h.on('handshake:error', (e) => handshakes.push(e.code))
    const record = { incarnation: Date.now(), version: 0, status: 0 }
    await h.request(ka.publicKey, '$mesh.Exchange', {
      records: [
        { ...record, name: kx.publicKey, addresses: ['tcp://127.0.0.1:9'] },
        // d's key at h's address: dialling it reaches h, whose key is not d's.
        { ...record, name: kd.publicKey, addresses: [hAt] },
      ],
      want: [],
    })
    expect(a.members().some((m) => m.name === kx.publicKey)).toBe(false)
    const lost = await heard(a, 'leave', kd.publicKey)
    expect(lost.state).toBe('gone')
    expect(lost.why).toMatch(/HANDSHAKE|key/i)
    // Nothing was diverted: h never joined as d, and a never linked to d.
    expect(a.activeConnections()).not.toContain(kd.publicKey)
    expect(h.activeConnections()).toEqual([ka.publicKey])
    // Bounded: its dial stopped, and a does not dial d again while it is held down.
    expect(a.peers().filter((p) => p.name === kd.publicKey && p.state !== 'down')).toEqual([])
    expect(handshakes.length).toBeLessThanOrEqual(2)
    // A real member still comes in and is served.
    const b = node(kb, [`${ka.publicKey}@${at}`], authorised)
    await b.listen('tcp://127.0.0.1:*')
    await linked(b, ka.publicKey)
    expect(await b.request(ka.publicKey, '$node.Ping')).toMatchObject({ name: ka.publicKey })
  })

  it('a member whose advertised address accepts connections and never answers is dialled one connection at a time, with back-off, and lost', async () => {
    const [ka, kh, kd] = (await keys(3)) as [Keypair, Keypair, Keypair]
    const authorised = [ka.publicKey, kh.publicKey, kd.publicKey]
    const a = node(ka, [], authorised)
    const at = await a.listen('tcp://127.0.0.1:*')
    const h = makeNode(kh.publicKey, { keypair: kh, authorizedKeys: authorised })
    h.connect(ka.publicKey, at)
    await Promise.all([linked(a, kh.publicKey), linked(h, ka.publicKey)])
    // A TCP server that takes every connection and says nothing: no ZMTP greeting, ever.
    const held: Socket[] = []
    let accepted = 0
    const silent = createServer((socket) => {
      accepted++
      held.push(socket)
      socket.on('error', () => undefined)
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const address = `tcp://127.0.0.1:${(silent.address() as AddressInfo).port}`
    try {
      const began = performance.now()
      await h.request(ka.publicKey, '$mesh.Exchange', {
        records: [{ name: kd.publicKey, addresses: [address], incarnation: Date.now(), version: 0, status: 0 }],
        want: [],
      })
      // Dialled until lost: 5 periods of peerTimeout (600 ms) at most, here with the test timings.
      const lost = await heard(a, 'leave', kd.publicKey, 15_000)
      const seconds = (performance.now() - began) / 1000
      expect(lost.state).toBe('gone')
      // One connection at a time, each waiting for the handshake to time out before the next: far fewer than one a
      // reconnectMin (20 ms) would be; and none once lost.
      expect(accepted).toBeGreaterThanOrEqual(1)
      expect(accepted).toBeLessThanOrEqual(Math.ceil(seconds / 0.2) + 2)
      // Lost, it is dialled no more: its dial is gone.
      expect(a.peers().filter((p) => p.name === kd.publicKey && p.state !== 'down')).toEqual([])
    } finally {
      for (const socket of held) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  })

  it('one seed list for every node: its own KEY@address is skipped; a keyed seed whose name resolves to several addresses is tried at each in turn; a late resolver answer after close() is harmless', async () => {
    const [ka, kb, kc] = (await keys(3)) as [Keypair, Keypair, Keypair]
    const all = [ka.publicKey, kb.publicKey, kc.publicKey]
    const a = node(ka, [], all)
    const at = await a.listen('tcp://127.0.0.1:*')
    const port = portOf(at)
    // Every node is given the same seeds, a's among them: a skips its own.
    const seeds = [`${ka.publicKey}@tcp://seeds.test:${port}`]
    const resolver = async (): Promise<string[]> => ['127.0.0.9', '127.0.0.1'] // nothing listens at the first
    const b = makeNode(kb.publicKey, { keypair: kb, authorizedKeys: all, seeds, resolver, gossipInterval: 100 })
    a.joinMesh(seeds)
    await linked(b, ka.publicKey, 15_000)
    // A resolver that answers after close(): nothing happens, nothing throws.
    let answer!: (addresses: string[]) => void
    const late = makeNode(kc.publicKey, {
      keypair: kc,
      authorizedKeys: all,
      seeds,
      resolver: () => new Promise<string[]>((resolve) => (answer = resolve)),
      gossipInterval: 100,
    })
    await until(() => answer !== undefined, 5000, 'the resolver asked')
    await late.close()
    answer(['127.0.0.1'])
    await new Promise((resolve) => setImmediate(resolve))
    expect(late.activeConnections()).toEqual([])
  })

  it("a keyed seed's dial at another pod's address (another key) does not lose the member it names", async () => {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const [kb, kc, ka, kx] = (await keys(4)) as [Keypair, Keypair, Keypair, Keypair]
    const c = node(kc, [])
    const cAt = await c.listen('tcp://127.0.0.1:*')
    // x is another pod of the service, with another key; a is slow to start: known through c, listening later.
    const x = node(kx, [`${kc.publicKey}@${cAt}`])
    await x.listen(`tcp://127.0.0.2:${port}`)
    const a = makeNode(ka.publicKey, {
      keypair: ka,
      seeds: [`${kc.publicKey}@${cAt}`],
      advertise: [`tcp://127.0.0.3:${port}`],
      gossipInterval: 100,
    })
    const b = makeNode(kb.publicKey, {
      keypair: kb,
      seeds: [`${kc.publicKey}@${cAt}`, `${ka.publicKey}@tcp://pods.test:${port}`],
      resolver: async () => ['127.0.0.2', '127.0.0.3'],
      gossipInterval: 100,
    })
    await b.listen('tcp://127.0.0.1:*')
    const lost: string[] = []
    b.on('member:leave', (m) => m.name === ka.publicKey && lost.push(`${m.state}: ${m.why}`))
    // The seed's dial reaches x, whose key is not a's: refused, twice in a row.
    let handshakes = 0
    await within(
      new Promise<void>((resolve) =>
        b.on('peer:refused', (peer, error) => peer === ka.publicKey && error.code === 'HANDSHAKE' && ++handshakes >= 2 && resolve()),
      ),
      15_000,
      "b's seed dial refused at x",
    )
    await a.listen(`tcp://127.0.0.3:${port}`)
    await linked(b, ka.publicKey, 15_000)
    expect(lost).toEqual([])
  })

  it('seeds on an encrypted node are KEY@address, and a seed key authorizedKeys refuses is refused at once', async () => {
    const [ka, kb] = (await keys(2)) as [Keypair, Keypair]
    expect(() => new Bilateral({ network: 'n', name: ka.publicKey, keypair: ka, seeds: ['tcp://127.0.0.1:7000'] })).toThrow(/KEY@ENDPOINT/)
    expect(
      () =>
        new Bilateral({
          network: 'n',
          name: ka.publicKey,
          keypair: ka,
          seeds: [`${kb.publicKey}@tcp://127.0.0.1:7000`],
          authorizedKeys: [ka.publicKey],
        }),
    ).toThrow(/not one authorizedKeys admits/)
  })
})
