/**
 * The lifecycle's wire, against raw DEALERs written from PROTOCOL.md: a peer
 * that speaks only the previous release's protocol gets none of the new
 * fields or frames, one that announces `callTimeout` gets them, and a
 * hostile one sending bad deadlines, CANCELs or metadata gets coded errors
 * while the node goes on serving.
 */
import { encode } from '@msgpack/msgpack'
import { afterEach, describe, expect, it } from 'vitest'
import type { BilateralError, CallContext } from '../lib/index.js'
import { closeAll, deferred, makeNode, nextEvent } from './helpers.js'
import { RawPeer, T, callBytes, type Envelope } from './rawpeer.js'

const raws: RawPeer[] = []
afterEach(async () => {
  for (const raw of raws.splice(0)) raw.close()
  await closeAll()
})

const NET = 'test net'

/** A node `svc` with a handler that waits for its signal, and a raw peer joined to it (announcing `callTimeout` if given). */
async function setup(callTimeout?: number) {
  const node = makeNode('svc')
  const started: CallContext[] = []
  const aborted = deferred<BilateralError>()
  const running = deferred<CallContext>()
  node.register(
    {
      Wait: (_: unknown, ctx: CallContext) =>
        new Promise((resolve) => {
          started.push(ctx)
          running.resolve(ctx)
          ctx.signal.addEventListener('abort', () => (aborted.resolve(ctx.signal.reason as BilateralError), resolve('late')))
        }),
      Echo: (x: unknown) => x,
      Meta: (_: unknown, ctx: CallContext) => ctx.meta,
    },
    'S',
  )
  const endpoint = await node.listen('tcp://127.0.0.1:*')
  const raw = new RawPeer(endpoint)
  raws.push(raw)
  const stay = await raw.join(NET, 'raw', undefined, callTimeout)
  await node.waitForPeers(['raw'], { timeout: 5000 })
  return { node, raw, stay, started, aborted, running, endpoint }
}

/** The raw peer's next CALL envelope (answering nothing), within 5 s. */
const nextCall = (raw: RawPeer): Promise<Envelope> => raw.nextOf(T.CALL)

describe('a peer of the previous release (it announces no callTimeout)', () => {
  it('gets plain CALLs whatever the options, and no CANCEL when a call is aborted', async () => {
    const { node, raw, stay } = await setup()
    // Our STAY announces callTimeout and stallTimeout in its window, after the two counts a peer of the previous release reads.
    expect(stay.length).toBe(7)
    expect(stay[6]).toEqual([64, 64 * 1024 * 1024, 2000, 60_000])
    const controller = new AbortController()
    const call = node.call(['raw'], 'R.M', 1, { timeout: 700, meta: { traceparent: 't' }, signal: controller.signal })
    const envelope = await nextCall(raw)
    expect(envelope).toEqual([1, T.CALL, envelope[2], 'R.M'])
    controller.abort()
    expect(await call).toMatchObject([{ from: 'raw', ok: false, error: { code: 'CANCELLED' } }])
    // The next thing it receives is the next call, not a CANCEL.
    void node.call(['raw'], 'R.Next', 2, { timeout: 300 })
    const values = await raw.next()
    expect((values[0] as Envelope).slice(0, 2)).toEqual([1, T.CALL])
    expect((values[0] as Envelope)[3]).toBe('R.Next')
  })

  it('is served as before: its calls carry no deadline, and the handler sees none', async () => {
    const { raw, running } = await setup()
    // Fields it did not announce are not read: a deadline of 0 from it does not stop the call.
    await raw.send(new Uint8Array([...encode([1, T.CALL, 5, 'S.Wait', 0]), ...encode(null)]))
    const ctx = await running.promise
    expect(ctx.deadline).toBeUndefined()
    await raw.send(callBytes(6, 'S.Echo', 'hi'))
    expect(await raw.nextOf(T.REPLY)).toEqual([1, T.REPLY, 6])
  })
})

describe('a peer that announces callTimeout', () => {
  it('gets the time left and the metadata, none when they are the defaults, and a CANCEL on abort', async () => {
    const { node, raw } = await setup(1500)
    const controller = new AbortController()
    const call = node.call(['raw'], 'R.M', 1, { timeout: 700, meta: { traceparent: 't' }, signal: controller.signal })
    const rich = await nextCall(raw)
    expect(rich.slice(3, 5)).toEqual(['R.M', 700])
    expect(rich[5]).toBeInstanceOf(Uint8Array)
    expect(Buffer.from(rich[5] as Uint8Array)).toEqual(Buffer.from(encode({ traceparent: 't' })))
    controller.abort()
    expect(await raw.nextOf(T.CANCEL)).toEqual([1, T.CANCEL, rich[2]])
    expect(await call).toMatchObject([{ ok: false, error: { code: 'CANCELLED' } }])
    // The node's own callTimeout (2000, announced in its STAY) is not repeated on the wire.
    void node.call(['raw'], 'R.Plain', 1)
    expect(await nextCall(raw)).toEqual([1, T.CALL, expect.any(Number), 'R.Plain'])
  })

  it('a CALL of it without a deadline gives the handler its announced callTimeout; one with a deadline, that', async () => {
    const { raw, started } = await setup(1500)
    const before = Date.now()
    await raw.send(callBytes(1, 'S.Wait', null))
    await raw.send(new Uint8Array([...encode([1, T.CALL, 2, 'S.Wait', 300]), ...encode(null)]))
    await raw.send(callBytes(3, 'S.Echo', 0))
    await raw.nextOf(T.REPLY)
    expect(started).toHaveLength(2)
    expect(started[0]!.deadline! - before).toBeGreaterThan(1400)
    expect(started[0]!.deadline! - before).toBeLessThanOrEqual(1600)
    expect(started[1]!.deadline! - before).toBeLessThanOrEqual(400)
  })

  it('its CALL arriving with no time left is not run; its CANCEL aborts the handler, whose answer is dropped', async () => {
    const { node, raw, started, aborted } = await setup(1500)
    await raw.send(new Uint8Array([...encode([1, T.CALL, 1, 'S.Wait', 0]), ...encode(null)]))
    await raw.send(callBytes(2, 'S.Wait', null))
    await raw.send(encode([1, T.CANCEL, 2]))
    // A CANCEL for a call that is not running is ignored.
    await raw.send(encode([1, T.CANCEL, 999]))
    const reason = await aborted.promise
    expect(reason.code).toBe('CANCELLED')
    expect(started).toHaveLength(1)
    await raw.send(callBytes(3, 'S.Echo', 'after'))
    const reply = await raw.next()
    // The cancelled call's answer never comes: the next answer is call 3's.
    expect(reply[0]).toEqual([1, T.REPLY, 3])
    expect(reply[1]).toBe('after')
    expect(node.stats()).toMatchObject({ expiredCalls: 1, cancelledAnswers: 1, running: 0 })
  })
})

describe('a peer reusing call ids, or sending long deadlines', () => {
  it('a call id reused while its call runs: the first is aborted but still counted, the second is the one CANCEL reaches', async () => {
    const node = makeNode('svc', { maxConcurrent: 16 })
    const aborts: string[] = []
    let started = 0
    const allStarted = deferred()
    node.register(
      {
        Wait: (_: unknown, ctx: CallContext) =>
          new Promise((resolve) => {
            if (++started === 2) allStarted.resolve()
            ctx.signal.addEventListener('abort', () => (aborts.push((ctx.signal.reason as BilateralError).message), resolve(null)))
          }),
        Echo: (x: unknown) => x,
      },
      'S',
    )
    const raw = new RawPeer(await node.listen('tcp://127.0.0.1:*'))
    raws.push(raw)
    await raw.join(NET, 'raw', undefined, 1500)
    await node.waitForPeers(['raw'], { timeout: 5000 })
    await raw.send(callBytes(7, 'S.Wait', null))
    await raw.send(callBytes(7, 'S.Wait', null))
    await allStarted.promise
    await raw.send(callBytes(8, 'S.Echo', 'sync'))
    await raw.nextOf(T.REPLY)
    expect(aborts).toHaveLength(1)
    expect(aborts[0]).toContain('reused the id')
    // Both still count until they settle; the first has settled (it honoured its signal), so one is left.
    expect(node.stats()).toMatchObject({ running: 1, runningPeers: 1 })
    await raw.send(encode([1, T.CANCEL, 7]))
    await raw.send(callBytes(9, 'S.Echo', 'sync'))
    await raw.nextOf(T.REPLY)
    expect(aborts).toHaveLength(2)
    expect(node.stats()).toMatchObject({ running: 0, runningBytes: 0, runningPeers: 0, cancelledAnswers: 2 })
  })

  it('a deadline beyond what a timer can hold (2³² − 1 ms) does not abort the handler early', async () => {
    const { raw, running, node } = await setup(1500)
    const before = Date.now()
    await raw.send(new Uint8Array([...encode([1, T.CALL, 1, 'S.Wait', 0xffffffff]), ...encode(null)]))
    const ctx = await running.promise
    expect(ctx.signal.aborted).toBe(false)
    await raw.send(callBytes(2, 'S.Echo', 'later'))
    await raw.nextOf(T.REPLY)
    expect(ctx.signal.aborted).toBe(false)
    expect(ctx.deadline! - before).toBeGreaterThan(0xffffffff - 1000)
    expect(node.stats().running).toBe(1)
  })
})

describe('a hostile peer’s metadata', () => {
  const withMeta = (id: number, meta: Uint8Array): Uint8Array =>
    new Uint8Array([...encode([1, T.CALL, id, 'S.Meta', null, meta]), ...encode(null)])

  it('too large, not a map, nested, or with bad keys: BAD_REQUEST, and the node serves on, that peer and the others', async () => {
    const { node, raw, endpoint } = await setup(1500)
    const friend = makeNode('friend')
    friend.connect('svc', endpoint)
    await friend.waitForPeers(['svc'], { timeout: 5000 })
    const bad = [
      encode({ big: 'x'.repeat(9000) }),
      encode(['not', 'a', 'map']),
      encode({ nested: { map: 'x' } }),
      encode({ 'Bad Key': 'x' }),
      encode({ n: 5 }),
      new Uint8Array([0xc1, 0xff]),
      new Uint8Array(0),
    ]
    for (const [i, meta] of bad.entries()) await raw.send(withMeta(i + 1, meta))
    for (let i = 0; i < bad.length; i++) {
      const error = await raw.nextOf(T.ERROR)
      expect(error.slice(0, 4)).toEqual([1, T.ERROR, i + 1, 'BAD_REQUEST'])
      expect(String(error[5])).toContain('metadata')
    }
    await raw.send(withMeta(50, encode({ ok: 'yes' })))
    const reply = await raw.next()
    expect(reply).toEqual([[1, T.REPLY, 50], { ok: 'yes' }])
    // Beyond an envelope's binary limit (64 KiB) the envelope itself is refused: dropped and reported, the peer served on.
    const dropped = nextEvent<[BilateralError]>(node, 'frame:dropped')
    await raw.send(withMeta(60, encode({ big: 'x'.repeat(70_000) })))
    expect((await dropped)[0].code).toBe('PROTOCOL')
    await raw.send(callBytes(61, 'S.Echo', 'still here'))
    expect(await raw.next()).toEqual([[1, T.REPLY, 61], 'still here'])
    expect(await friend.call(['svc'], 'S.Meta', null, { meta: { 'x-id': '7' } })).toEqual([
      { from: 'svc', ok: true, reply: { 'x-id': '7' } },
    ])
  })
})
