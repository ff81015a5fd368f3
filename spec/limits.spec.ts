import { afterEach, expect, it } from 'vitest'
import type { BilateralError, RemoteError } from '../lib/index.js'
import { closeAll, deferred, makeNode, nextEvent, pair } from './helpers.js'
import { Relay } from './relay.js'

afterEach(closeAll)

it('beyond maxInflight a call gets OVERLOADED at once for that peer, and other peers are unaffected', async () => {
  const alpha = makeNode('alpha', { maxInflight: 2 })
  const slow = makeNode('slow')
  const fast = makeNode('fast')
  slow.register({ Hang: () => new Promise(() => {}) }, 'Svc')
  fast.register({ Hang: () => 'not hanging' }, 'Svc')
  await pair(alpha, slow)
  await pair(alpha, fast)
  const hung = [alpha.call(['slow'], 'Svc.Hang', null, { timeout: 30_000 }), alpha.call(['slow'], 'Svc.Hang', null, { timeout: 30_000 })]
  const t0 = performance.now()
  const results = await alpha.call(['slow', 'fast'], 'Svc.Hang', null, { timeout: 30_000 })
  expect(performance.now() - t0).toBeLessThan(5_000)
  expect(results).toEqual([
    { from: 'fast', ok: true, reply: 'not hanging' },
    expect.objectContaining({ from: 'slow', ok: false, error: expect.objectContaining({ code: 'OVERLOADED', peer: 'slow' }) }),
  ])
  expect(alpha.stats().inflight).toBe(1)
  await alpha.close()
  expect((await Promise.all(hung)).flat().map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['CLOSED', 'CLOSED'])
  expect(alpha.stats()).toMatchObject({ pending: 0, inflight: 0 })
})

it('beyond maxConcurrent the serving node answers OVERLOADED, and serves again once a handler finishes', async () => {
  const caller = makeNode('caller')
  const server = makeNode('server', { maxConcurrent: 1 })
  const entered = deferred()
  const release = deferred<string>()
  server.register({ Work: () => (entered.resolve(), release.promise), Quick: () => 'quick' }, 'Svc')
  await pair(caller, server)
  const first = caller.call(['server'], 'Svc.Work', null, { timeout: 30_000 })
  await entered.promise
  expect((await caller.call(['server'], 'Svc.Quick'))[0]).toMatchObject({ ok: false, error: { code: 'OVERLOADED', peer: 'server' } })
  release.resolve('done')
  expect(await first).toEqual([{ from: 'server', ok: true, reply: 'done' }])
  expect((await caller.call(['server'], 'Svc.Quick'))[0]).toEqual({ from: 'server', ok: true, reply: 'quick' })
  expect(server.stats().running).toBe(0)
})

it('limits are validated', () => {
  for (const bad of [0, -1, 1.5, Infinity]) {
    expect(() => makeNode('x', { maxInflight: bad })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => makeNode('x', { maxConcurrent: bad })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  }
  // Liveness timings: a heartbeat needs a ping interval to be answered in; a stall is at least a dead link's timeout.
  for (const [options, message] of [
    [{ pingInterval: 400, peerTimeout: 700 }, /peerTimeout must be at least 2 × pingInterval/],
    [{ peerTimeout: 10_000_000 }, /peerTimeout must be at most 6553500/],
    [{ peerTimeout: 600, stallTimeout: 500 }, /stallTimeout must be at least peerTimeout/],
    [{ stallTimeout: -1 }, /stallTimeout must be a number of ms greater than 0/],
  ] as const) {
    expect(() => makeNode('x', options)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(message) }),
    )
  }
  // stallTimeout defaults to 60 s, or to peerTimeout when that is longer.
  expect(() => makeNode('x', { peerTimeout: 90_000 })).not.toThrow()
})

it('arguments or a result beyond maxMessageSize are refused TOO_LARGE, and the link stays up', async () => {
  const alpha = makeNode('alpha', { maxMessageSize: 64 * 1024 })
  const beta = makeNode('beta', { maxMessageSize: 64 * 1024 })
  beta.register({ Echo: (x: unknown) => x, Grow: (n: number) => new Uint8Array(n) }, 'Svc')
  await pair(alpha, beta)
  const big = new Uint8Array(65 * 1024)
  await expect(alpha.call(['beta'], 'Svc.Echo', big)).rejects.toMatchObject({
    code: 'TOO_LARGE',
    message: expect.stringContaining('maxMessageSize'),
  })
  await expect(alpha.cast(['beta'], 'Svc.Echo', big)).rejects.toMatchObject({ code: 'TOO_LARGE' })
  expect(await alpha.call(['beta'], 'Svc.Grow', 65 * 1024)).toMatchObject([{ from: 'beta', ok: false, error: { code: 'TOO_LARGE' } }])
  // Just under the limit goes through, and nobody went down.
  expect(await alpha.call(['beta'], 'Svc.Grow', 60 * 1024)).toMatchObject([{ from: 'beta', ok: true }])
  expect(alpha.activeConnections()).toEqual(['beta'])
  expect(alpha.stats()).toMatchObject({ pending: 0, inflight: 0 })
})

it('many small calls at once are packed into parts no larger than maxMessageSize, so peers with a small limit keep their link', async () => {
  // 200 calls of 300 bytes in one turn would pack into one 60 KB part; each side's ZeroMQ would close a connection carrying it.
  const alpha = makeNode('alpha', { maxMessageSize: 2048 })
  const beta = makeNode('beta', { maxMessageSize: 2048 })
  beta.register({ Echo: (s: string) => s }, 'Svc')
  await pair(alpha, beta)
  const downs: string[] = []
  alpha.on('peer:down', (_peer: string, reason: string) => downs.push(reason))
  const args = 'x'.repeat(300)
  const results = await Promise.all(Array.from({ length: 200 }, () => alpha.call(['beta'], 'Svc.Echo', args)))
  expect(results.flat().filter((r) => !r.ok || r.reply !== args)).toEqual([])
  expect(downs).toEqual([])
})

it("many small calls at once, both ways, to a peer with a smaller maxMessageSize: parts are packed only up to the peer's limit", async () => {
  // alpha would pack 200 calls of 1 KB into parts of up to 256 KiB; beta's ZeroMQ would close the connection on any over 64 KiB.
  const alpha = makeNode('alpha')
  const beta = makeNode('beta', { maxMessageSize: 64 * 1024 })
  for (const node of [alpha, beta]) node.register({ Echo: (s: string) => s }, 'Svc')
  await pair(alpha, beta)
  const downs: string[] = []
  for (const node of [alpha, beta]) node.on('peer:down', (peer: string, reason: string) => downs.push(`${peer} ${reason}`))
  const args = 'x'.repeat(1000)
  const calls = [
    ...Array.from({ length: 200 }, () => alpha.call(['beta'], 'Svc.Echo', args)),
    ...Array.from({ length: 200 }, () => beta.call(['alpha'], 'Svc.Echo', args)),
  ]
  const results = (await Promise.all(calls)).flat()
  expect(results.filter((r) => !r.ok || r.reply !== args)).toEqual([])
  expect(downs).toEqual([])
})

it("a message beyond the peer's smaller maxMessageSize: its ZeroMQ closes the connection, the call ends PEER_DOWN, the mesh heals", async () => {
  const alpha = makeNode('alpha')
  const beta = makeNode('beta', { maxMessageSize: 64 * 1024 })
  beta.register({ Size: (x: Uint8Array) => x.length }, 'Svc')
  await pair(alpha, beta)
  const down = new Promise((resolve) => alpha.once('peer:down', (...args) => resolve(args)))
  const [result] = await alpha.call(['beta'], 'Svc.Size', new Uint8Array(100 * 1024), { timeout: 5000 })
  expect(result).toMatchObject({ from: 'beta', ok: false, error: { code: 'PEER_DOWN' } })
  // HEARTBEAT if the drop is noticed first; PART (NOT_JOINED) if our DEALER had already reconnected and beta said it forgot us.
  const [peer, reason] = (await down) as [string, string]
  expect(peer).toBe('beta')
  expect(['HEARTBEAT', 'PART']).toContain(reason)
  await alpha.waitForPeers(['beta'], { timeout: 5000 })
  expect(await alpha.call(['beta'], 'Svc.Size', new Uint8Array(1000))).toEqual([{ from: 'beta', ok: true, reply: 1000 }])
})

it('a peer that stops reading: calls beyond its window wait, beyond maxQueuedBytes they fail OVERLOADED at once, other peers go on, and what waited is delivered once it reads', async () => {
  // peerTimeout long enough that the held link is not declared dead while its queue fills.
  const maxQueuedBytes = 4 * 1024 * 1024
  const small = { maxQueuedBytes, maxMessageSize: 1024 * 1024 }
  const alpha = makeNode('alpha', { peerTimeout: 20_000, ...small })
  const stuck = makeNode('stuck', small)
  const fine = makeNode('fine')
  for (const node of [stuck, fine]) node.register({ Size: (x: Uint8Array) => x.length }, 'Svc')
  const relay = await Relay.start(await stuck.listen('tcp://127.0.0.1:*'))
  alpha.connect('stuck', relay.address)
  await pair(alpha, fine)
  await alpha.waitForPeers(['stuck'], { timeout: 5000 })
  relay.hold('toListener', true)
  // Calls of 16 KiB, one per event-loop turn (each its own ZeroMQ message): stuck's window goes out, the next 4 MiB wait, then refusal.
  const payload = new Uint8Array(16 * 1024)
  const held: Promise<unknown>[] = []
  type Entry = { ok: boolean; error?: { code: string; message: string } }
  let refused: Entry | undefined
  for (let i = 0; i < 5_000 && refused === undefined; i++) {
    const call = alpha.call(['stuck'], 'Svc.Size', payload, { timeout: 30_000 }).then(([r]) => {
      if (!r!.ok) refused ??= r as Entry
      return r
    })
    held.push(call)
    await new Promise((resolve) => setImmediate(resolve))
  }
  expect(refused).toMatchObject({ ok: false, error: { code: 'OVERLOADED', message: expect.stringContaining('is not reading') } })
  // The window (64 messages here, before its 4 MiB) and the backlog were accepted before the refusal, no more: what they hold is bounded in bytes.
  expect(held.length * payload.length).toBeGreaterThan(maxQueuedBytes)
  expect(held.length * payload.length).toBeLessThan(2 * maxQueuedBytes)
  // With `stuck` full, a call to both answers at once: `fine` replies, `stuck` is refused without waiting.
  const t0 = performance.now()
  const both = await alpha.call(['fine', 'stuck'], 'Svc.Size', payload, { timeout: 10_000 })
  expect(performance.now() - t0).toBeLessThan(2000)
  expect(both).toMatchObject([
    { from: 'fine', ok: true, reply: 16 * 1024 },
    { from: 'stuck', ok: false, error: { code: 'OVERLOADED' } },
  ])
  // Once it reads again, what was queued and what waited is delivered and answered.
  relay.hold('toListener', false)
  const results = (await Promise.all(held)) as Entry[]
  expect(results.filter((r) => !r.ok)).toHaveLength(1)
  expect(alpha.stats().pending).toBe(0)
  await relay.close()
})

it("a handler error's huge message is clipped, so the ERROR frame cannot exceed the caller's maxMessageSize", async () => {
  const alpha = makeNode('alpha', { maxMessageSize: 64 * 1024 })
  const beta = makeNode('beta')
  beta.register({ Fail: () => Promise.reject(new Error('x'.repeat(1_000_000))) }, 'Svc')
  await pair(alpha, beta)
  const [entry] = await alpha.call(['beta'], 'Svc.Fail')
  expect(entry).toMatchObject({ from: 'beta', ok: false, error: { code: 'REMOTE' } })
  const message = (entry as unknown as { error: RemoteError }).error.remoteMessage
  expect(message.length).toBe(16 * 1024 + 1)
  expect(message.endsWith('x…')).toBe(true)
  expect(alpha.activeConnections()).toEqual(['beta'])
})

it('at the smallest maxMessageSize, a handler error with a long name, multibyte message and code still fits its ERROR frame', async () => {
  const alpha = makeNode('alpha', { maxMessageSize: 1024 })
  const beta = makeNode('beta', { maxMessageSize: 1024 })
  const failure = Object.assign(new Error('€'.repeat(5000)), { name: 'N'.repeat(1000), code: '€'.repeat(64) })
  beta.register({ Fail: () => Promise.reject(failure), Ok: () => 'ok' }, 'Svc')
  await pair(alpha, beta)
  const [entry] = await alpha.call(['beta'], 'Svc.Fail')
  expect(entry).toMatchObject({ from: 'beta', ok: false, error: { code: 'REMOTE', remoteCode: '€'.repeat(64) } })
  const error = (entry as unknown as { error: RemoteError }).error
  expect(error.remoteMessage).toBe(`${'€'.repeat(204)}…`)
  expect(await alpha.call(['beta'], 'Svc.Ok')).toEqual([{ from: 'beta', ok: true, reply: 'ok' }])
  expect(alpha.activeConnections()).toEqual(['beta'])
})

it('a method name too long for maxMessageSize is refused TOO_LARGE at once, by call and by cast', async () => {
  const alpha = makeNode('alpha', { maxMessageSize: 1024 })
  const beta = makeNode('beta', { maxMessageSize: 1024 })
  await pair(alpha, beta)
  const method = `Svc.${'x'.repeat(1010)}`
  await expect(alpha.call(['beta'], method)).rejects.toMatchObject({ code: 'TOO_LARGE', message: expect.stringContaining('method name') })
  await expect(alpha.cast(['beta'], method)).rejects.toMatchObject({ code: 'TOO_LARGE' })
  expect(alpha.activeConnections()).toEqual(['beta'])
})

it('a node whose maxMessageSize exceeds 32 bits joins either way and packs its calls', async () => {
  const big = makeNode('big', { maxMessageSize: 2 ** 33 })
  const small = makeNode('small')
  const other = makeNode('other')
  for (const node of [big, small, other]) node.register({ Echo: (s: string) => s }, 'Svc')
  await pair(big, small)
  await pair(other, big)
  const calls = [
    ...Array.from({ length: 50 }, (_, i) => big.call([], 'Svc.Echo', `b${i}`)),
    ...Array.from({ length: 50 }, (_, i) => small.call(['big'], 'Svc.Echo', `s${i}`)),
    ...Array.from({ length: 50 }, (_, i) => other.call(['big'], 'Svc.Echo', `o${i}`)),
  ]
  const results = (await Promise.all(calls)).flat()
  expect(results).toHaveLength(200)
  expect(results.filter((r) => !r.ok)).toEqual([])
})

it('a dialler refused for a connection limit is told so (OVERLOADED, not AUTH), and the listener reports it once, as connection:refused', async () => {
  const listener = makeNode('listener', { maxConnections: 1 })
  const first = makeNode('first')
  const second = makeNode('second')
  const handshakeErrors: string[] = []
  listener.on('handshake:error', (e) => handshakeErrors.push(e.code))
  const endpoint = await pair(first, listener)
  const refusedHere = nextEvent<[string, string]>(listener, 'connection:refused')
  const refusedThere = nextEvent<[string, BilateralError]>(second, 'peer:refused')
  second.connect('listener', endpoint)
  const [[address, why], [, error]] = await Promise.all([refusedHere, refusedThere])
  expect(address).toBe('127.0.0.1')
  expect(why).toMatch(/maxConnections/)
  expect(error).toMatchObject({ code: 'OVERLOADED', message: expect.stringMatching(/connection limit/) })
  expect(handshakeErrors).toEqual([])
  expect(listener.stats().refusedConnections).toBeGreaterThan(0)
})
