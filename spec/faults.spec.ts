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

it('calls complete in both directions over a lossy link (10% of chunks retransmitted after 50 ms)', async () => {
  const { listener, dialler, relay } = await throughRelay()
  relay.loss = 0.1
  relay.rto = 50
  // One at a time, so each call and reply is its own chunk: about 240 chunks, some 24 of them lost.
  for (let i = 0; i < 60; i++) {
    const [from, to] = i % 2 === 0 ? [dialler, 'listener'] : [listener, 'dialler']
    expect(await from.call([to], 'Host.Where')).toEqual([{ from: to, ok: true, reply: to }])
  }
  expect(relay.counts.lost).toBeGreaterThan(0)
  // Stalls of a few tens of ms are not a dead link: nobody went down.
  expect(dialler.activeConnections()).toEqual(['listener'])
  expect(listener.activeConnections()).toEqual(['dialler'])
})

it('a byte lost for good: the stream is out of step, the peer goes down and the mesh heals', async () => {
  const { listener, dialler, relay } = await throughRelay()
  const down = nextEvent<[string, string]>(dialler, 'peer:down', 5000)
  relay.dropNext.toListener = true
  const [lost] = await dialler.call(['listener'], 'Host.Where', null, { timeout: 3000 })
  expect(relay.counts.dropped).toBe(1)
  // The call's bytes went missing: it ends PEER_DOWN once the broken connection is noticed (or TIMEOUT if later).
  expect(lost).toMatchObject({ from: 'listener', ok: false })
  expect(['PEER_DOWN', 'TIMEOUT']).toContain(lost!.ok ? 'ok' : lost!.error.code)
  // libzmq closes the garbled connection. If the dialler's socket has already reconnected when its sweep looks, it carries
  // on, and the listener, which never saw a JOIN on the new connection, answers PART NOT_JOINED; otherwise HEARTBEAT.
  expect(['HEARTBEAT', 'PART']).toContain((await down)[1])
  await dialler.waitForPeers(['listener'], { timeout: 10_000 })
  await listener.waitForPeers(['dialler'], { timeout: 10_000 })
  expect(await dialler.call(['listener'], 'Host.Where')).toEqual([{ from: 'listener', ok: true, reply: 'listener' }])
})
