// Calls addressed to members (by role, by the receivers they announce, one
// member picked for a request) and the member events, over real nodes that
// form a mesh from seeds on loopback.
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Bilateral, BilateralError, type BilateralOptions } from '../lib/index.js'
import { closeAll, ensureBuilt, heard, makeNode, until, within } from './helpers.js'

beforeAll(ensureBuilt)
afterEach(closeAll)

const member = (name: string, seeds: string[], options: Partial<BilateralOptions> = {}): Bilateral =>
  makeNode(name, { seeds, gossipInterval: 100, ...options })

/** Resolves once `node` knows `name` as up and announcing `receiver`. */
function offering(node: Bilateral, name: string, receiver: string, ms = 10_000): Promise<void> {
  const ready = (): boolean => node.members().some((m) => m.name === name && m.state === 'up' && m.offers.includes(receiver))
  if (ready()) return Promise.resolve()
  return within(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (!ready()) return
        for (const e of ['member:join', 'member:update', 'peer:up'] as const) node.off(e, check)
        resolve()
      }
      for (const e of ['member:join', 'member:update', 'peer:up'] as const) node.on(e, check)
    }),
    ms,
    `${node.name} seeing ${name} up, offering ${receiver}`,
  )
}

const codeOf = (error: unknown): string | undefined => (error instanceof BilateralError ? error.code : undefined)

/** Indexers: Search answers with the member's name; Hold answers once `release()` is called, so calls can be kept in flight. */
function indexers(...nodes: Bilateral[]): { release(): void; holding(n: number): Promise<void> } {
  const held: (() => void)[] = []
  let waiting: { n: number; resolve: () => void } | undefined
  for (const node of nodes) {
    const Hold = (): Promise<string> =>
      new Promise<string>((resolve) => {
        held.push(() => resolve(node.name))
        if (waiting !== undefined && held.length >= waiting.n) waiting.resolve()
      })
    node.register({ Search: (q: string) => `${node.name}:${q}`, Hold }, 'Index')
  }
  return {
    release: () => held.splice(0).forEach((r) => r()),
    holding: (n) =>
      within(new Promise<void>((resolve) => (held.length >= n ? resolve() : (waiting = { n, resolve }))), 10_000, `${n} calls held`),
  }
}

describe('calls addressed to members', () => {
  it('by role and by receiver, resolved at the moment of the call, one entry per member addressed; none addressed is nobody, not everybody', async () => {
    const seed = member('seed', [])
    const at = await seed.listen('tcp://127.0.0.1:*')
    const i1 = member('i1', [at], { roles: ['indexer', 'eu-west'] })
    const i2 = member('i2', [at], { roles: ['indexer'] })
    const w = member('w', [at], { roles: ['writer'] })
    indexers(i1, i2)
    const puts: string[] = []
    w.register({ Put: (v: string) => void puts.push(v) }, 'Store')
    const c = member('c', [at])
    await Promise.all([i1, i2, w].map((n) => n.listen('tcp://127.0.0.1:*')))
    await Promise.all([offering(c, 'i1', 'Index'), offering(c, 'i2', 'Index'), offering(c, 'w', 'Store')])

    const byRole = await c.call({ role: 'indexer' }, 'Index.Search', 'q')
    expect(byRole.map((r) => r.from).sort()).toEqual(['i1', 'i2'])
    expect(byRole.every((r) => r.ok)).toBe(true)
    expect((await c.call({ role: 'eu-west' }, 'Index.Search', 'q')).map((r) => r.ok && r.reply)).toEqual(['i1:q'])
    expect((await c.call({ offers: 'Index' }, 'Index.Search', 'q')).map((r) => r.from).sort()).toEqual(['i1', 'i2'])
    // Both must hold; a selector that addresses nobody calls nobody (call([]) would call every peer).
    expect(await c.call({ role: 'indexer', offers: 'Store' }, 'Index.Search', 'q')).toEqual([])
    expect(await c.cast({ role: 'nobody' }, 'Store.Put', 'x')).toEqual([])
    expect(await c.cast({ role: 'writer' }, 'Store.Put', 'v1')).toEqual(['w'])
    const streamed: string[] = []
    for await (const r of c.stream({ role: 'indexer' }, 'Index.Search', 's')) streamed.push(r.from)
    expect(streamed.sort()).toEqual(['i1', 'i2'])
    // A typed service over the members a selector addresses, and over one it picks.
    interface Index {
      Search(q: string): string
    }
    const all = c.service<Index>('Index', { peers: { role: 'indexer' } })
    expect((await all.Search('t')).length).toBe(2)
    const one = c.service<Index>('Index', { peer: {} })
    expect(await one.Search('u')).toMatch(/^i[12]:u$/)

    // Resolved when called: a member that left is not addressed any more.
    const left = heard(c, 'leave', 'i2')
    await i2.close()
    expect(await left).toMatchObject({ name: 'i2', state: 'left' })
    expect((await c.call({ role: 'indexer' }, 'Index.Search', 'q')).map((r) => r.from)).toEqual(['i1'])
    expect(puts).toContain('v1')
  })

  it('a request addressed by selector goes to one member that offers the method, the less busy of two, and says so when none is up', async () => {
    const seed = member('seed', [])
    const at = await seed.listen('tcp://127.0.0.1:*')
    const i1 = member('i1', [at])
    const i2 = member('i2', [at])
    const held = indexers(i1, i2)
    const c = member('c', [at])
    await Promise.all([i1.listen('tcp://127.0.0.1:*'), i2.listen('tcp://127.0.0.1:*')])
    await Promise.all([offering(c, 'i1', 'Index'), offering(c, 'i2', 'Index')])
    // Without role or receiver, the method's receiver decides: seed and c offer no Index, so never picked.
    const one = await c.request<string>({}, 'Index.Search', 'x')
    expect(['i1:x', 'i2:x']).toContain(one)
    // 100 held in flight at once: each picks the member with fewer of ours in flight, so they split evenly.
    const calls = Array.from({ length: 100 }, () => c.request<string>({}, 'Index.Hold', undefined, { timeout: 10_000 }))
    await held.holding(100)
    held.release()
    const who = await Promise.all(calls)
    const toI1 = who.filter((n) => n === 'i1').length
    expect(Math.abs(toI1 - 50)).toBeLessThanOrEqual(1)
    // None offers it, none has the role: NOT_CONNECTED, saying which members it looked for.
    const none = await c.request({ role: 'nobody' }, 'Index.Search', 'x').catch((e: unknown) => e)
    expect(codeOf(none)).toBe('NOT_CONNECTED')
    expect(String((none as Error).message)).toMatch(/no member with role "nobody" is up/)
    expect(codeOf(await c.request({}, 'Missing.Method', 1).catch((e: unknown) => e))).toBe('NOT_CONNECTED')
  })

  it('announces the receivers every peer may call, others only when asked to; a receiver registered later reaches the others as an update', async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    const b = member('b', [at])
    b.register({ Open: () => 1 }, 'Open')
    b.register({ Hidden: () => 2 }, 'Hidden', { peers: ['someone'] })
    b.register({ Shown: () => 3 }, 'Shown', { peers: ['a'], announce: true })
    b.register({ Quiet: () => 4 }, 'Quiet', { announce: false })
    await offering(a, 'b', 'Open')
    expect(a.members().find((m) => m.name === 'b')!.offers).toEqual(['Open', 'Shown'])
    const updated = heard(a, 'update', 'b')
    b.register({ Late: () => 5 }, 'Late')
    expect((await updated).offers).toContain('Late')
    expect(await a.request({ offers: 'Late' }, 'Late.Late')).toBe(5)
    expect(() => b.register({ X: () => 0 }, 'X', { announce: 'yes' as unknown as boolean })).toThrow(/announce must be a boolean/)
  })

  it('member events: join when one enters, update when its record changes, leave when it leaves, with its state', async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    const joined = heard(a, 'join', 'b')
    const b = member('b', [at], { roles: ['r'] })
    const info = await joined
    expect(info).toMatchObject({ name: 'b', roles: ['r'] })
    const updated = heard(a, 'update', 'b')
    await b.listen('tcp://127.0.0.1:*')
    expect((await updated).addresses).toHaveLength(1)
    const left = heard(a, 'leave', 'b')
    await b.close()
    expect(await left).toMatchObject({ name: 'b', state: 'left', why: 'it said it left' })
  })

  it('a receiver whose name a record cannot carry is not announced (and asking is refused), and the member stays visible', async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    const c = member('c', [at])
    c.register({ Ping: () => 1 }, 'R'.repeat(70))
    expect(() => c.register({ Ping: () => 1 }, 'S'.repeat(70), { announce: true })).toThrow(/cannot be announced: .*at most 64 bytes/)
    c.register({ Ping: () => 1 }, 'Short')
    await offering(a, 'c', 'Short')
    expect(a.members().find((m) => m.name === 'c')!.offers).toEqual(['Short'])
    // 64 at most: the 65th asked for is refused, one not asked for is not announced.
    for (let i = 1; i < 64; i++) c.register({ Ping: () => 1 }, `R${i}`)
    expect(() => c.register({ Ping: () => 1 }, 'Over', { announce: true })).toThrow(/at most 64 receivers/)
    c.register({ Ping: () => 1 }, 'Quietly')
    await until(() => a.members().find((m) => m.name === 'c')!.offers.length === 64, 10_000, 'c announcing 64')
    expect(a.members().find((m) => m.name === 'c')!.offers).not.toContain('Quietly')
  })

  it('a selector is a plain object; {} addresses the members that announce the method receiver; a flood of one name is one update', async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    const b = member('b', [at])
    const c = member('c', [at])
    c.register({ Who: () => 'c' }, 'Svc')
    await Promise.all([b.listen('tcp://127.0.0.1:*'), c.listen('tcp://127.0.0.1:*')])
    await offering(a, 'c', 'Svc')
    await until(() => a.activeConnections().length === 2, 10_000, 'a linked to b and c')
    // Not a selector, and not a list: refused, never taken for "every member".
    await expect(a.call(new Set(['c']) as never, 'Svc.Who')).rejects.toThrow(TypeError)
    await expect(a.call(new Map() as never, 'Svc.Who')).rejects.toThrow(TypeError)
    await expect(a.request(new Set(['c']) as never, 'Svc.Who')).rejects.toThrow(/one peer name or a member selector/)
    // {} (and undefined fields) mean the members offering Svc: c, not b.
    expect((await a.call({}, 'Svc.Who')).map((r) => r.from)).toEqual(['c'])
    expect((await a.call({ role: undefined }, 'Svc.Who')).map((r) => r.from)).toEqual(['c'])
    await expect(a.request({}, 'Svc')).rejects.toThrow(/is not Receiver.Method/)
    await expect(a.call({}, 'Svc')).rejects.toThrow(/is not Receiver.Method/)
    // 256 records of one name in one exchange, each newer: one update event, and b's own record refuted once.
    const updates: string[] = []
    a.on('member:update', (m) => updates.push(m.name))
    const { records } = (await a.request('b', '$mesh.Exchange', { records: [], want: ['b'] })) as {
      records: { name: string; incarnation: number; version: number; addresses: string[] }[]
    }
    const base = records[0]!
    const flood = Array.from({ length: 256 }, (_, i) => ({ ...base, version: base.version + 1 + i, roles: [`r${i}`], status: 0 }))
    await b.request('a', '$mesh.Exchange', { records: flood, want: [] })
    expect(updates.filter((n) => n === 'b')).toHaveLength(1)
  })

  it('joinMesh() makes a running node a member, or adds seeds to one', async () => {
    const a = member('a', [])
    const at = await a.listen('tcp://127.0.0.1:*')
    const late = makeNode('late')
    expect(() => late.members()).toThrow(/membership is off/)
    late.joinMesh([at])
    await heard(late, 'join', 'a')
    expect(() => late.joinMesh(['not an endpoint'])).toThrow(/seeds must be an array/)
    // advertise as the option would be: members are told that address, not where it listens.
    const behindNat = makeNode('nat', { roles: ['edge'] })
    await behindNat.listen('tcp://127.0.0.1:*')
    expect(() => behindNat.joinMesh([at], { advertise: ['nowhere'] })).toThrow(/option advertise must be an array/)
    expect(() => behindNat.joinMesh([at], { advertize: [] } as never)).toThrow(/advertize is not an option of joinMesh/)
    expect(() => behindNat.joinMesh([at], { resolver: 'dns' } as never)).toThrow(/option resolver must be a function/)
    behindNat.joinMesh([at], { advertise: ['tcp://127.0.0.9:7000'] })
    expect(() => behindNat.joinMesh([at], { advertise: ['tcp://127.0.0.9:7001'] })).toThrow(/a member already/)
    await heard(a, 'join', 'nat')
    const seen = a.members().find((m) => m.name === 'nat')!
    expect(seen.addresses).toEqual(['tcp://127.0.0.9:7000'])
    expect(seen.roles).toEqual(['edge'])
    expect(() => late.joinMesh(Array.from({ length: 64 }, (_, i) => `tcp://127.0.0.1:${1000 + i}`))).toThrow(/at most 64 seeds/)
  })

  it('misuse is answered where it is made', async () => {
    const a = member('a', [])
    const plain = makeNode('plain')
    await expect(a.call({ rol: 'x' } as never, 'A.B')).rejects.toThrow(/"rol" is not an option of a member selector; did you mean role\?/)
    await expect(a.call({ role: '' }, 'A.B')).rejects.toThrow(/role must be a non-empty string/)
    await expect(a.call({ role: 7 } as never, 'A.B')).rejects.toThrow(/role must be a non-empty string/)
    await expect(plain.call({ role: 'x' }, 'A.B')).rejects.toThrow(/needs membership/)
    await expect(plain.request({ role: 'x' }, 'A.B')).rejects.toThrow(/needs membership/)
    await expect(a.cast({ offer: 'X' } as never, 'A.B')).rejects.toThrow(/did you mean offers\?/)
    expect(() => a.stream({ role: 5 } as never, 'A.B')).toThrow(/role must be a non-empty string/)
    await expect(a.request(null as never, 'A.B')).rejects.toThrow(/one peer name or a member selector/)
    expect(() => new Bilateral({ network: 'n', name: 'x', roles: ['a', 'a'] })).toThrow(
      /roles must be an array of at most 16 different names/,
    )
    expect(() => new Bilateral({ network: 'n', name: 'x', roles: Array.from({ length: 17 }, (_, i) => `r${i}`) })).toThrow(/roles/)
    expect(() => new Bilateral({ network: 'n', name: 'x', roles: ['r'.repeat(65)] })).toThrow(/roles/)
    expect(() => new Bilateral({ network: 'n', name: 'x', roles: 'indexer' as never })).toThrow(/roles/)
    // Roles show in $node.Info even without membership.
    const r = makeNode('r', { roles: ['indexer'] })
    await r.listen('tcp://127.0.0.1:*').then((e) => plain.connect('r', e))
    await plain.waitForPeers(['r'], { timeout: 5000 })
    expect(await plain.request('r', '$node.Info')).toMatchObject({ roles: ['indexer'] })
  }, 20_000)
})
