// peers(): every peer a node knows, up, being dialled or down, and where it
// stands. Real nodes on loopback.
import { afterEach, describe, expect, it } from 'vitest'
import type { Bilateral, PeerInfo } from '../lib/index.js'
import { closeAll, makeNode, pair, until } from './helpers.js'

afterEach(closeAll)

/** The first `peers()` entry for `name` that `match` accepts, polled every 20 ms within `ms`. */
async function peerWhen(node: Bilateral, name: string, match: (p: PeerInfo) => boolean, ms = 5000): Promise<PeerInfo> {
  let found: PeerInfo | undefined
  // until() ends its own loop at the deadline: a state that never comes leaves nothing polling.
  await until(() => (found = node.peers().find((p) => p.name === name && match(p))) !== undefined, ms, `${name} in the state wanted`)
  return found!
}

describe('peers()', () => {
  it('shows a link up from both sides, with direction, address, since and the round trip of its pings', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const before = Date.now()
    const endpoint = await pair(a, b)
    const there = await peerWhen(a, 'b', (p) => p.rtt !== undefined)
    expect(there).toMatchObject({ state: 'up', direction: 'outbound', address: endpoint, retryAt: undefined, why: undefined })
    expect(there.rtt).toBeGreaterThanOrEqual(0)
    expect(there.rtt).toBeLessThan(1000)
    expect(there.since).toBeGreaterThanOrEqual(before - 5)
    expect(there.since).toBeLessThanOrEqual(Date.now() + 5)
    expect(b.peers()).toEqual([expect.objectContaining({ name: 'a', state: 'up', direction: 'inbound', address: undefined })])
  })

  it('shows a dial that cannot connect, one refused (with its code and when it retries), and a peer gone', async () => {
    const a = makeNode('a')
    a.connect('nowhere', 'tcp://127.0.0.1:1')
    const nowhere = await peerWhen(a, 'nowhere', (p) => p.why !== undefined)
    expect(['connecting', 'backoff']).toContain(nowhere.state)
    expect(nowhere).toMatchObject({ direction: 'outbound', address: 'tcp://127.0.0.1:1' })
    expect(nowhere.why).toContain('tcp://127.0.0.1:1')

    const other = makeNode('other', { network: 'elsewhere' })
    a.connect('other', await other.listen('tcp://127.0.0.1:*'))
    const refused = await peerWhen(a, 'other', (p) => p.state === 'refused')
    expect(refused).toMatchObject({ code: 'NETWORK_MISMATCH', direction: 'outbound' })
    expect(refused.retryAt).toBeGreaterThanOrEqual(refused.since)
    expect(refused.why).toContain('network')

    // A peer that dialled us and left: down, and why; one we dial and that left: being dialled again, and why.
    const c = makeNode('c')
    const d = makeNode('d')
    await pair(c, a)
    await pair(a, d)
    await Promise.all([c.close(), d.close()])
    // Each peer's own down (two nextEvent listeners made at once would both resolve on the first of them).
    expect(await peerWhen(a, 'c', (p) => p.state === 'down')).toMatchObject({
      state: 'down',
      direction: 'inbound',
      code: 'PART',
      why: 'went down (PART)',
    })
    const redial = await peerWhen(a, 'd', (p) => p.state !== 'up')
    expect(['connecting', 'joining', 'backoff']).toContain(redial.state)
    expect(redial.code === 'PART' || redial.why !== undefined).toBe(true)
  })

  it('a peer we dialled and then disconnected is down, outbound, at the address we dialled', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const endpoint = await pair(a, b)
    await a.disconnect('b')
    expect(a.peers()).toEqual([
      expect.objectContaining({ name: 'b', state: 'down', direction: 'outbound', address: endpoint, code: 'DISCONNECT' }),
    ])
  })
})
