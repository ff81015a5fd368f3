// Seeds given as host names (every address tried, resolved again as the seed
// comes due, through an injected resolver: no DNS server), and encrypted
// meshes: members dialled by key, records of keys authorizedKeys refuses kept
// nowhere, and a record pointing a member's key at another node's address
// diverting nothing and costing a bounded number of dials. Real nodes on
// loopback addresses (127.0.0.1 to 127.0.0.3 share one port).
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Bilateral, generateKeypair, type BilateralOptions, type Keypair } from '../lib/index.js'
import { closeAll, ensureBuilt, heard, makeNode, within } from './helpers.js'

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
