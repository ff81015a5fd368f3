// Membership (the seeds option): a mesh that forms itself from one seed each,
// members that leave, die or restart, and peers that send it nonsense. Real
// nodes on loopback; the killed member is a child process.
import { fork } from 'node:child_process'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Bilateral, BilateralError, type BilateralOptions, type MemberInfo } from '../lib/index.js'
import { FAST, closeAll, ensureBuilt, makeNode, until } from './helpers.js'

beforeAll(ensureBuilt)
afterEach(closeAll)

const member = (name: string, seeds: string[], options: Partial<BilateralOptions> = {}): Bilateral =>
  makeNode(name, { seeds, gossipInterval: 100, ...options })

const stateOf = (node: Bilateral, name: string): MemberInfo['state'] | undefined => node.members().find((m) => m.name === name)?.state

describe('membership', () => {
  it('ten nodes, each given only the previous one as its seed, form a full mesh', async () => {
    const nodes: Bilateral[] = []
    let previous: string | undefined
    for (let i = 0; i < 10; i++) {
      const node = member(`m${i}`, previous === undefined ? [] : [previous], { roles: i % 2 === 0 ? ['even'] : [] })
      if (i % 2 === 1) node.register({ Which: () => node.name }, 'Odd')
      previous = await node.listen('tcp://127.0.0.1:*')
      nodes.push(node)
    }
    await until(() => nodes.every((n) => n.activeConnections().length === 9), 20_000, 'a full mesh')
    for (const node of nodes) {
      const members = node.members()
      expect(members).toHaveLength(10)
      expect(members[0]).toMatchObject({ name: node.name, state: 'self' })
      expect(members.filter((m) => m.state === 'up')).toHaveLength(9)
      expect(members.every((m) => m.addresses.length === 1 && m.addresses[0]!.startsWith('tcp://127.0.0.1:'))).toBe(true)
    }
    // One link a pair: whoever sorts first dialled.
    const links = nodes.flatMap((n) => n.links().filter((l) => l.direction === 'outbound'))
    expect(links).toHaveLength(45)
    expect(await nodes[0]!.request('m9', '$node.Ping', undefined)).toMatchObject({ name: 'm9' })
    // Calls by role and by receiver reach exactly the members that qualify (never the caller itself).
    const first = nodes[0]!
    await until(() => first.members().filter((m) => m.offers.includes('Odd')).length === 5, 5000, 'the odd ones announcing Odd')
    const even = await first.call({ role: 'even' }, '$node.Ping')
    expect(even.map((r) => r.from).sort()).toEqual(['m2', 'm4', 'm6', 'm8'])
    expect(even.every((r) => r.ok)).toBe(true)
    const odd = await first.call({ offers: 'Odd' }, 'Odd.Which')
    expect(odd.map((r) => (r.ok ? r.reply : r.error.code)).sort()).toEqual(['m1', 'm3', 'm5', 'm7', 'm9'])
  })

  it('a member that never listens joins through its seed and is called back over its own links', async () => {
    const a = member('a', [])
    const b = member('b', [await a.listen('tcp://127.0.0.1:*')])
    // It knows only b, and nobody can dial it.
    const quiet = member('quiet', [await b.listen('tcp://127.0.0.1:*')])
    await until(() => quiet.activeConnections().length === 2 && a.activeConnections().includes('quiet'), 10_000, 'quiet in the mesh')
    expect(stateOf(a, 'quiet')).toBe('up')
    expect(a.members().find((m) => m.name === 'quiet')!.addresses).toEqual([])
    expect(await a.request('quiet', '$node.Ping', undefined)).toMatchObject({ name: 'quiet' })
  })

  it('a member that closes is left everywhere at once, and no one dials it again', async () => {
    const a = member('a', [])
    const seed = await a.listen('tcp://127.0.0.1:*')
    const b = member('b', [seed])
    const c = member('c', [seed])
    await Promise.all([b.listen('tcp://127.0.0.1:*'), c.listen('tcp://127.0.0.1:*')])
    await until(() => [a, b, c].every((n) => n.activeConnections().length === 2), 10_000, 'a mesh of three')
    await c.close()
    await until(() => stateOf(a, 'c') === 'left' && stateOf(b, 'c') === 'left', 2000, 'c left')
    const roundsAt = a.stats().members!.rounds
    // c's PART follows its Leave on the same connection, and may be read a turn of the event loop later.
    const linked = (n: Bilateral): unknown[] => n.peers().filter((p) => p.name === 'c' && p.state !== 'down')
    await until(() => linked(a).length === 0 && linked(b).length === 0, 2000, 'c parted')
    // Nobody dials it again: still no link to c a few rounds on (gossipInterval 100 ms here).
    await until(() => a.stats().members!.rounds >= roundsAt + 3, 2000, 'three more rounds')
    expect(linked(a)).toEqual([])
    expect(linked(b)).toEqual([])
  })

  it('once close() has begun, a member refuses new work while it tells its peers it leaves, and they still hear it', async () => {
    const a = member('a', [])
    const b = member('b', [await a.listen('tcp://127.0.0.1:*')])
    await b.listen('tcp://127.0.0.1:*')
    await until(() => a.activeConnections().length === 1 && b.activeConnections().length === 1, 10_000, 'a and b linked')
    const closing = a.close()
    // Before, listen() here bound, and resolved with an address of a node being closed; connect() dialled.
    await expect(a.listen('tcp://127.0.0.1:*')).rejects.toMatchObject({ code: 'CLOSED' })
    expect(() => a.connect('c', 'tcp://127.0.0.1:1')).toThrow(expect.objectContaining({ code: 'CLOSED' }))
    await expect(a.dial('tcp://127.0.0.1:1')).rejects.toMatchObject({ code: 'CLOSED' })
    expect(a.peers().map((p) => p.name)).toEqual(['b'])
    await expect(a.call(['b'], '$node.Ping')).rejects.toMatchObject({ code: 'CLOSED' })
    await expect(a.cast(['b'], '$node.Ping')).rejects.toMatchObject({ code: 'CLOSED' })
    await closing
    await until(() => stateOf(b, 'a') === 'left', 2000, 'a left, as a told b')
  })

  it('a member killed with SIGKILL is gone from every view within 2 × peerTimeout; its restart (a later incarnation) replaces its record', async () => {
    const a = member('a', [])
    const seed = await a.listen('tcp://127.0.0.1:*')
    const b = member('b', [seed])
    await b.listen('tcp://127.0.0.1:*')
    const start = () => {
      const child = fork(new URL('./fixtures/member.mjs', import.meta.url).pathname, [seed, JSON.stringify(FAST)], { stdio: 'ignore' })
      return child
    }
    let child = start()
    try {
      await until(() => stateOf(a, 'k') === 'up' && stateOf(b, 'k') === 'up', 15_000, 'k up')
      const first = a.members().find((m) => m.name === 'k')!.incarnation
      child.kill('SIGKILL')
      const killed = performance.now()
      await until(() => stateOf(a, 'k') === 'gone' && stateOf(b, 'k') === 'gone', 4 * FAST.peerTimeout + 5000, 'k gone')
      // The bound README states, with room for the poll and this machine's noise.
      expect(performance.now() - killed).toBeLessThan(2 * FAST.peerTimeout + 2000)
      expect(a.peers().filter((p) => p.name === 'k' && p.state !== 'down')).toEqual([])
      child = start()
      await until(() => stateOf(a, 'k') === 'up' && stateOf(b, 'k') === 'up', 15_000, 'k back')
      expect(a.members().find((m) => m.name === 'k')!.incarnation).toBeGreaterThan(first)
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('hostile records and digests are refused with coded errors, and the node goes on serving', async () => {
    const a = member('a', [])
    const plain = makeNode('plain')
    plain.connect('a', await a.listen('tcp://127.0.0.1:*'))
    await plain.waitForPeers(['a'], { timeout: 5000 })
    const refusedWith = async (method: string, args: unknown): Promise<string | undefined> => {
      try {
        await plain.request('a', method, args)
        return undefined
      } catch (error) {
        return (error as BilateralError & { remoteCode?: string }).remoteCode
      }
    }
    const record = { name: 'x', addresses: ['tcp://127.0.0.1:1'], incarnation: 1, version: 0, status: 0 }
    // A record whose address ZeroMQ cannot dial, then one of a real node: connecting to the first throws every
    // round; the round goes on to the second (in table order), so the node reaches it and keeps serving.
    const c = makeNode('c')
    const ec = await c.listen('tcp://127.0.0.1:*')
    await plain.request('a', '$mesh.Exchange', {
      records: [
        { ...record, name: 'b-bad', addresses: ['tcp://not an endpoint'] },
        { ...record, name: 'c', addresses: [ec] },
      ],
      want: [],
    })
    await until(() => a.activeConnections().includes('c'), 5000, 'a reaching c')
    expect(stateOf(a, 'b-bad')).toBe('known')
    expect(await refusedWith('$mesh.Exchange', { records: 'no', want: [] })).toBe('INVALID_ARGUMENT')
    expect(await refusedWith('$mesh.Exchange', { records: Array.from({ length: 257 }, () => record), want: [] })).toBe('INVALID_ARGUMENT')
    expect(await refusedWith('$mesh.Exchange', { records: [{ ...record, name: 'n'.repeat(256) }], want: [] })).toBe('INVALID_ARGUMENT')
    expect(await refusedWith('$mesh.Exchange', { records: [{ ...record, addresses: Array(9).fill('tcp://h:1') }], want: [] })).toBe(
      'INVALID_ARGUMENT',
    )
    expect(await refusedWith('$mesh.Exchange', { records: [{ ...record, addresses: ['not an endpoint'] }], want: [] })).toBe(
      'INVALID_ARGUMENT',
    )
    expect(await refusedWith('$mesh.Exchange', { records: [{ ...record, incarnation: -1 }], want: [] })).toBe('INVALID_ARGUMENT')
    expect(await refusedWith('$mesh.Exchange', { records: [], want: Array(300).fill('x') })).toBe('INVALID_ARGUMENT')
    // A flood of well-formed records for new names: at most MAX_MEMBERS kept, the rest dropped.
    for (let batch = 0; batch < 5; batch++) {
      const records = Array.from({ length: 256 }, (_, i) => ({ ...record, name: `fake-${batch}-${i}`, addresses: [] }))
      await plain.request('a', '$mesh.Exchange', { records, want: [] })
    }
    expect(a.members().length).toBeLessThanOrEqual(1 + 1024)
    // Counted: the table is full, members never reached were forgotten to make room for newer ones,
    // and the undialable address failed to connect.
    expect(a.stats().members).toMatchObject({ members: 1024 })
    expect(a.stats().members!.evicted).toBeGreaterThan(0)
    expect(a.stats().members!.connectFailures).toBeGreaterThan(0)
    // A record claiming to be a later a is answered by a going past it. First a's own record has taken the address it
    // listens on (at a round), or that round, coming after the claims, would move its version on once more.
    await until(() => a.members()[0]!.addresses.length > 0, 5000, "a's record with its address")
    const mine = a.members()[0]!
    await plain.request('a', '$mesh.Exchange', {
      records: [{ ...record, name: 'a', incarnation: mine.incarnation, version: 50, status: 2 }],
      want: [],
    })
    const { records } = (await plain.request('a', '$mesh.Exchange', { records: [], want: ['a'] })) as {
      records: { version: number; status: number }[]
    }
    expect(records[0]).toMatchObject({ status: 0 })
    expect(records[0]!.version).toBeGreaterThan(50)
    // One at the last version: a goes on in a new incarnation.
    await plain.request('a', '$mesh.Exchange', {
      records: [{ ...record, name: 'a', incarnation: mine.incarnation, version: 2 ** 32 - 1, status: 2 }],
      want: [],
    })
    const after = (await plain.request('a', '$mesh.Exchange', { records: [], want: ['a'] })) as {
      records: { incarnation: number; version: number; status: number }[]
    }
    expect(after.records[0]).toMatchObject({ incarnation: mine.incarnation + 1, version: 0, status: 0 })
    // A flood of $mesh calls from one peer: at most 64 a second are answered, the rest OVERLOADED
    // (the 200 may straddle two of a's one-second windows on a slow machine: at most 128 answered then).
    const answers = await Promise.all(Array.from({ length: 200 }, () => refusedWith('$mesh.Sync', { hash: 'x' })))
    expect(answers.every((code) => code === undefined || code === 'OVERLOADED')).toBe(true)
    expect(answers.filter((code) => code === undefined).length).toBeLessThanOrEqual(128)
    expect(a.stats().members!.throttled).toBe(answers.filter((code) => code === 'OVERLOADED').length)
    expect(plain.stats().members).toBeUndefined()
    // Still serving.
    expect(await plain.request('a', '$node.Ping', undefined)).toMatchObject({ name: 'a' })
  })

  it('a table filled with made-up records still takes real members: tombstones and members never reached make room', async () => {
    const a = member('a', [])
    const seed = await a.listen('tcp://127.0.0.1:*')
    const plain = makeNode('plain')
    plain.connect('a', seed)
    await plain.waitForPeers(['a'], { timeout: 5000 })
    const fake = { addresses: [], incarnation: 1, version: 0, status: 0 }
    for (let batch = 0; batch < 4; batch++) {
      const records = Array.from({ length: 256 }, (_, i) => ({ ...fake, name: `fake-${batch}-${i}` }))
      await plain.request('a', '$mesh.Exchange', { records, want: [] })
    }
    expect(a.members()).toHaveLength(1025)
    const b = member('b', [seed])
    const c = member('c', [seed])
    await Promise.all([b.listen('tcp://127.0.0.1:*'), c.listen('tcp://127.0.0.1:*')])
    await until(() => stateOf(b, 'c') === 'up' && stateOf(c, 'b') === 'up', 10_000, 'b and c meeting through a full table')
    expect(a.members().length).toBeLessThanOrEqual(1025)
  })

  it('options are checked: seeds are endpoints, advertise needs seeds, and a node without seeds says membership is off', () => {
    expect(() => new Bilateral({ network: 'n', name: 'x', seeds: ['127.0.0.1:7000'] })).toThrow(/seeds must be an array/)
    expect(() => new Bilateral({ network: 'n', name: 'x', advertise: ['tcp://h:1'] })).toThrow(/give seeds too/)
    expect(() => new Bilateral({ network: 'n', name: 'x' }).members()).toThrow(/membership is off/)
  })
})
