// $node: what every node serves about itself, filtered by exposure for each
// caller. Real nodes on loopback.
import { readFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, makeNode, pair } from './helpers.js'

afterEach(closeAll)

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

describe('$node', () => {
  it('answers Ping, Health and Info by default; Info lists only what this caller may call', async () => {
    const b = makeNode('b')
    const a = makeNode('a')
    const c = makeNode('c')
    b.register({ Rate: () => 0.05 }, 'Public')
    b.register({ Balance: () => 10, Withdraw: () => 0 }, 'Account', { peers: ['c'] })
    const endpoint = await pair(a, b)
    await pair(c, b)
    const before = Date.now()
    const ping = (await a.request('b', '$node.Ping')) as { name: string; at: number }
    expect(ping.name).toBe('b')
    expect(ping.at).toBeGreaterThanOrEqual(before)
    expect(await a.request('b', '$node.Health')).toMatchObject({ status: 'ok', peers: 2 })
    const forA = await a.request('b', '$node.Info')
    // pair() listens once a pair: both endpoints are advertised.
    expect(forA).toMatchObject({ name: 'b', network: 'test net', release: VERSION, addresses: [endpoint, expect.stringMatching(/^tcp:/)] })
    expect((forA as { receivers: unknown }).receivers).toEqual({ $node: ['Ping', 'Info', 'Health'], Public: ['Rate'] })
    const forC = (await c.request('b', '$node.Info')) as { receivers: Record<string, string[]> }
    expect(forC.receivers).toEqual({ $node: ['Ping', 'Info', 'Health'], Public: ['Rate'], Account: ['Balance', 'Withdraw'] })
    // Nothing about other peers or load unless asked for.
    await expect(a.request('b', '$node.Peers')).rejects.toMatchObject({ code: 'NO_SUCH_METHOD' })
    await expect(a.request('b', '$node.Stats')).rejects.toMatchObject({ code: 'NO_SUCH_METHOD' })
  })

  it('serves Peers and Stats to the peers the option names, nothing to others; false serves nothing', async () => {
    const b = makeNode('b', { introspection: { methods: ['Ping', 'Peers', 'Stats'], peers: ['ops'] } })
    const ops = makeNode('ops')
    const a = makeNode('a')
    await pair(ops, b)
    await pair(a, b)
    const peers = (await ops.request('b', '$node.Peers')) as { name: string; state: string }[]
    expect(peers.map((p) => [p.name, p.state]).sort()).toEqual([
      ['a', 'up'],
      ['ops', 'up'],
    ])
    expect(await ops.request('b', '$node.Stats')).toMatchObject({ peers: 2, pending: 0 })
    for (const method of ['Ping', 'Peers', 'Stats', 'Info']) {
      await expect(a.request('b', `$node.${method}`)).rejects.toMatchObject({ code: 'NO_SUCH_METHOD' })
    }
    await expect(ops.request('b', '$node.Info')).rejects.toMatchObject({ code: 'NO_SUCH_METHOD' })

    const quiet = makeNode('quiet', { introspection: false })
    await pair(a, quiet)
    await expect(a.request('quiet', '$node.Ping')).rejects.toMatchObject({ code: 'NO_SUCH_METHOD' })
  })

  it('the $ names are reserved, and a bad introspection option is refused', () => {
    const a = makeNode('a')
    expect(() => a.register({ Ping: () => 1 }, '$node')).toThrow('receiver names starting with $ are reserved')
    expect(() => a.register({ X: () => 1 }, '$mine')).toThrow('reserved')
    expect(() => makeNode('x', { introspection: { methods: ['Ping', 'Shell'] as never } })).toThrow(
      'methods must be a list of Ping, Info, Health, Peers, Stats',
    )
    expect(() => makeNode('y', { introspection: { who: [] } as never })).toThrow('"who" is not an option of introspection')
    expect(() => makeNode('z', { introspection: null as never })).toThrow('option introspection must be false or { methods?, peers? }')
  })
})
