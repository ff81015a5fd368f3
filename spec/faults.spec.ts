import { afterEach, expect, it } from 'vitest'
import { FAST, closeAll, makeNode, nextEvent } from './helpers.js'
import { Relay } from './relay.js'

const relays: Relay[] = []
afterEach(async () => {
  for (const relay of relays.splice(0)) await relay.close()
  await closeAll()
})

/** dialler → relay → listener, both serving Host.Where. */
async function throughRelay() {
  const listener = makeNode('listener')
  const dialler = makeNode('dialler')
  for (const node of [listener, dialler]) node.register({ Where: () => node.name }, 'Host')
  const relay = await Relay.start(await listener.listen('tcp://127.0.0.1:*'))
  relays.push(relay)
  dialler.connect('listener', relay.address)
  await Promise.all([dialler.waitForPeers(['listener'], { timeout: 5000 }), listener.waitForPeers(['dialler'], { timeout: 5000 })])
  return { listener, dialler, relay }
}

it('calls complete in both directions over a link with 40 ms of latency each way', async () => {
  const { listener, dialler, relay } = await throughRelay()
  relay.latency = 40
  for (const [from, to] of [
    [dialler, 'listener'],
    [listener, 'dialler'],
  ] as const) {
    const t0 = performance.now()
    expect(await from.call([to], 'Host.Where', null, { timeout: 2000 })).toEqual([{ from: to, ok: true, reply: to }])
    expect(performance.now() - t0).toBeGreaterThanOrEqual(75)
  }
})

it('a one-way blackhole: calls end TIMEOUT, the dialler declares the peer down, and the mesh heals when it lifts', async () => {
  const { listener, dialler, relay } = await throughRelay()
  const down = nextEvent<[string, string]>(dialler, 'peer:down', 5000)
  relay.blackhole.toDialler = true
  const cutAt = performance.now()
  const lost = await dialler.call(['listener'], 'Host.Where', null, { timeout: 300 })
  expect(lost).toMatchObject([{ from: 'listener', ok: false, error: { code: 'TIMEOUT' } }])
  expect(await down).toEqual(['listener', 'HEARTBEAT'])
  expect(performance.now() - cutAt).toBeLessThan(FAST.peerTimeout * 1.5 + 250)
  relay.blackhole.toDialler = false
  await dialler.waitForPeers(['listener'], { timeout: 10_000 })
  await listener.waitForPeers(['dialler'], { timeout: 10_000 })
  expect(await dialler.call(['listener'], 'Host.Where')).toEqual([{ from: 'listener', ok: true, reply: 'listener' }])
  expect(await listener.call(['dialler'], 'Host.Where')).toEqual([{ from: 'dialler', ok: true, reply: 'dialler' }])
})
