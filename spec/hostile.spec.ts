import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import * as zmq from 'zeromq'
import { encode } from '@msgpack/msgpack'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Codec } from '../lib/wire/codec.js'
import { FrameType, encodeCall, encodeJoin, type Frame } from '../lib/wire/frames.js'
import { encodeBody } from '../lib/wire/body.js'
import { Arith, closeAll, ensureBuilt, makeNode, pair } from './helpers.js'

beforeAll(ensureBuilt)

const sockets: zmq.Dealer[] = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close()
  await closeAll()
})

const codec = new Codec()

/** A node with a real peer, and a raw DEALER (not our code) connected to its ROUTER. */
async function target() {
  const server = makeNode('server')
  const friend = makeNode('friend')
  let served = 0
  server.register({ SumDiff: (a: { A: number; B: number }) => (served++, { S: a.A + a.B, D: a.A - a.B }) }, 'Arith')
  const endpoint = await pair(friend, server)
  const raw = new zmq.Dealer({ linger: 0, receiveTimeout: 2000 })
  sockets.push(raw)
  raw.connect(endpoint)
  const dropped: string[] = []
  const waiting: { n: number; resolve: () => void }[] = []
  server.on('frame:dropped', (e) => {
    dropped.push(e.code)
    for (const w of waiting) if (dropped.length >= w.n) w.resolve()
  })
  /** Resolves once `n` messages have been dropped (the raw socket's connection is not ordered with the friend's). */
  const droppedAtLeast = (n: number) =>
    dropped.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ n, resolve }))
  return { server, friend, raw, dropped, droppedAtLeast, served: () => served }
}

async function stillServes(friend: ReturnType<typeof makeNode>): Promise<void> {
  expect(await friend.call(['server'], 'Arith.SumDiff', { A: 2, B: 1 })).toEqual([{ from: 'server', ok: true, reply: { S: 3, D: 1 } }])
}

async function answer(raw: zmq.Dealer): Promise<Frame[]> {
  return codec.decodeMessage(await raw.receive())
}

describe('hostile input from a raw ZeroMQ socket', () => {
  it('from a connection that has not joined, junk is dropped unread and counted, without an event per message; the node keeps serving', async () => {
    const { server, friend, raw, dropped } = await target()
    const before = server.stats().dropped
    await raw.send([Buffer.from('\xc1\xff\x00garbage', 'latin1')])
    await raw.send([Buffer.alloc(0)])
    await raw.send(Array.from({ length: 1000 }, () => Buffer.from([0xc1])))
    await raw.send([encode({ not: 'an envelope' })])
    await raw.send([encode([1, 99, 'unknown type'])])
    await raw.send([Buffer.alloc(64 * 1024, 0x94)])
    // The same connection then joins: its messages are handled in order, so the STAY comes after all of the above.
    await raw.send([encodeJoin({ network: 'test net', name: 'late joiner' })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.STAY }])
    expect(server.stats().dropped - before).toBe(6)
    expect(dropped).toEqual([])
    await stillServes(friend)
  })

  it('once joined, junk is dropped and reported as frame:dropped; the node keeps serving', async () => {
    const { friend, raw, dropped, droppedAtLeast } = await target()
    await raw.send([encodeJoin({ network: 'test net', name: 'rogue' })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.STAY }])
    await raw.send([Buffer.from('\xc1\xff\x00garbage', 'latin1')])
    await raw.send(Array.from({ length: 1000 }, () => Buffer.from([0xc1])))
    await raw.send([encode({ not: 'an envelope' })])
    await raw.send([encode([1, 99, 'unknown type'])])
    await droppedAtLeast(4)
    await stillServes(friend)
    expect(new Set(dropped)).toEqual(new Set(['PROTOCOL']))
  })

  it('a flood of refused JOINs on one connection gets a few refusals per joinInterval; the rest are dropped unread and counted', async () => {
    const { server, raw } = await target()
    const refusals: string[] = []
    server.on('peer:refused', (name) => refusals.push(name))
    const before = server.stats().dropped
    const wrong = encodeJoin({ network: 'wrong net', name: 'flooder' })
    for (let i = 0; i < 20_000; i++) await raw.send([wrong])
    for (let i = 0; i < 500 && server.stats().dropped + refusals.length - before < 20_000; i++) await new Promise((r) => setTimeout(r, 10))
    expect(server.stats().dropped + refusals.length - before).toBe(20_000)
    // Four a joinInterval (100 ms here): a flood that takes a second or so gets a few dozen answers.
    expect(refusals.length).toBeLessThan(200)
  })

  it('a CALL before JOIN reaches no handler and is told NOT_JOINED', async () => {
    const { friend, raw, served } = await target()
    await raw.send([encodeCall(1, 'Arith.SumDiff'), encodeBody({ A: 1, B: 2 })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.PART, reason: 'NOT_JOINED' }])
    await stillServes(friend)
    expect(served()).toBe(1)
  })

  it('a JOIN with a wrong or missing network is refused', async () => {
    const { raw, server } = await target()
    await raw.send([encodeJoin({ network: 'other net', name: 'intruder' })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.PART, reason: 'NETWORK_MISMATCH' }])
    await raw.send([encode([1, FrameType.JOIN])])
    await raw.send([encodeJoin({ network: 'test net', name: '' })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.PART, reason: 'PROTOCOL' }])
    expect(server.activeConnections()).toEqual(['friend'])
  })

  it('joined, it can call only real methods; __proto__ keys in arguments change no prototype', async () => {
    const { friend, raw } = await target()
    await raw.send([encodeJoin({ network: 'test net', name: 'rogue' })])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.STAY }])
    for (const [i, method] of ['Arith.__proto__', 'Arith.constructor', 'Arith.toString', 'Arith.hasOwnProperty'].entries()) {
      await raw.send([encodeCall(i + 1, method), encodeBody({ A: 1, B: 2 })])
      expect(await answer(raw)).toMatchObject([{ type: FrameType.ERROR, id: i + 1, code: 'NO_SUCH_METHOD' }])
    }
    // {"__proto__": {"polluted": true}} written by hand: msgpack map, key "__proto__".
    const poisoned = Buffer.concat([
      Buffer.from([0x81, 0xa9]),
      Buffer.from('__proto__'),
      Buffer.from([0x81, 0xa8]),
      Buffer.from('polluted'),
      Buffer.from([0xc3]),
    ])
    await raw.send([encodeCall(9, 'Arith.SumDiff'), poisoned])
    expect(await answer(raw)).toMatchObject([{ type: FrameType.ERROR, id: 9, code: 'BAD_REQUEST' }])
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    await stillServes(friend)
  })

  it('a peer that announces no maxPart (an earlier release) gets one part per envelope and body; one that does gets them packed', async () => {
    const { raw } = await target()
    const twoCalls = [
      encodeCall(1, 'Arith.SumDiff'),
      encodeBody({ A: 1, B: 2 }),
      encodeCall(2, 'Arith.SumDiff'),
      encodeBody({ A: 3, B: 4 }),
    ]
    /** The parts of the message answering both calls; each must be a REPLY. */
    const answerTwoCalls = async (): Promise<Buffer[]> => {
      await raw.send(twoCalls)
      const parts = await raw.receive()
      expect(codec.decodeMessage(parts)).toMatchObject([
        { type: FrameType.REPLY, id: 1 },
        { type: FrameType.REPLY, id: 2 },
      ])
      return parts
    }
    await raw.send([encodeJoin({ network: 'test net', name: 'old' })])
    expect(codec.decodeMessage(await raw.receive())).toMatchObject([{ type: FrameType.STAY, maxPart: 16 * 1024 * 1024 }])
    expect(await answerTwoCalls()).toHaveLength(4)
    // The same connection joins again, now announcing that it reads packed parts of up to 1 KiB.
    await raw.send([encodeJoin({ network: 'test net', name: 'old', target: 'server', maxPart: 1024 })])
    await raw.receive()
    expect(await answerTwoCalls()).toHaveLength(1)
  })

  it('a packed part with a garbage body: the calls before it are served, that call (and the rest of its part) is BAD_REQUEST', async () => {
    const { friend, raw } = await target()
    await raw.send([encodeJoin({ network: 'test net', name: 'rogue' })])
    await answer(raw)
    const part = Buffer.concat([
      encodeCall(1, 'Arith.SumDiff'),
      encodeBody({ A: 5, B: 3 }),
      encodeCall(2, 'Arith.SumDiff'),
      Buffer.from([0xc1]),
      encodeCall(3, 'Arith.SumDiff'),
      encodeBody({ A: 1, B: 1 }),
    ])
    await raw.send([part])
    const frames: Frame[] = []
    while (frames.length < 2) frames.push(...(await answer(raw)))
    expect(frames).toMatchObject([
      { type: FrameType.REPLY, id: 1 },
      { type: FrameType.ERROR, id: 2, code: 'BAD_REQUEST' },
    ])
    expect(codec.decodeBody((frames[0] as { body: Uint8Array }).body)).toEqual({ S: 8, D: 2 })
    await stillServes(friend)
  })

  it('arguments nested deeper than 100 are refused BAD_REQUEST before they are built, and reach no handler', async () => {
    const { friend, raw, served } = await target()
    await raw.send([encodeJoin({ network: 'test net', name: 'rogue' })])
    await answer(raw)
    // [[[[...nil]]]] a million deep: 1 MB that would decode into a million arrays.
    const nested = Buffer.concat([Buffer.alloc(1_000_000, 0x91), Buffer.from([0xc0])])
    await raw.send([encodeCall(1, 'Arith.SumDiff'), nested])
    expect(await answer(raw)).toMatchObject([
      { type: FrameType.ERROR, id: 1, code: 'BAD_REQUEST', message: expect.stringContaining('nested deeper than 100') },
    ])
    // The same body packed after its envelope in one part: it cannot be delimited, so it is the rest of the part.
    await raw.send([Buffer.concat([encodeCall(2, 'Arith.SumDiff'), nested])])
    expect(await answer(raw)).toMatchObject([
      { type: FrameType.ERROR, id: 2, code: 'BAD_REQUEST', message: expect.stringContaining('nested deeper than 100') },
    ])
    // An envelope nested as deep is dropped as a whole.
    await raw.send([Buffer.concat([Buffer.from([0x93, 0x01, 0x06]), nested])])
    await stillServes(friend)
    expect(served()).toBe(1)
  })
})

describe('hostile input against a node in its own process, with its memory watched', () => {
  const TARGET = fileURLToPath(new URL('./fixtures/target.mjs', import.meta.url))
  let child: ChildProcess | undefined
  afterEach(() => void child?.kill('SIGKILL'))

  type Stats = { served: number; reported: number; dropped: number; heapUsed: number; rss: number; pending: number; inbound: number }

  /** The target node (child process), our node `friend` joined to it, and a raw DEALER connected to it. */
  async function remoteTarget() {
    child = spawn(process.execPath, ['--expose-gc', TARGET], { stdio: ['ignore', 'pipe', 'inherit'] })
    const [line] = (await once(child.stdout!, 'data')) as [Buffer]
    const endpoint = line.toString().trim()
    const friend = makeNode('friend')
    friend.connect('target', endpoint)
    await friend.waitForPeers(['target'], { timeout: 5000 })
    const stats = async (gc = true): Promise<Stats> => {
      const [r] = await friend.call<Stats>(['target'], 'Probe.Stats', gc, { timeout: 10_000 })
      if (!r?.ok) throw new Error(`no stats: ${JSON.stringify(r)}`)
      return r.reply
    }
    const sum = async () => (await friend.call(['target'], 'Arith.SumDiff', { A: 2, B: 1 }))[0]
    const raw = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0 })
    sockets.push(raw)
    raw.connect(endpoint)
    // Warm up: a few thousand real calls, so caches and pools reach their working size.
    for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 100 }, sum))
    return { friend, raw, stats, sum, baseline: await stats() }
  }

  it('a 100 MB frame is refused by ZeroMQ before JavaScript sees it; memory stays at its level', async () => {
    const { raw, stats, sum, baseline } = await remoteTarget()
    // libzmq reads the frame's size, sees it exceeds maxMessageSize (16 MiB) and closes the connection.
    const disconnected = new Promise((resolve) => raw.events.on('disconnect', resolve))
    await raw.send([Buffer.alloc(100 * 1024 * 1024, 0x42)])
    await disconnected
    expect(await sum()).toEqual({ from: 'target', ok: true, reply: { S: 3, D: 1 } })
    const after = await stats()
    expect(after.served).toBe(baseline.served + 1)
    expect(after.heapUsed).toBeLessThan(baseline.heapUsed * 1.1)
    expect(after.rss).toBeLessThan(baseline.rss + 32 * 1024 * 1024)
  })

  it('a flood of 100,000 junk messages from a connection that never joined is dropped unread and counted; the node serves throughout, and memory returns to its level', async () => {
    const { raw, stats, sum, baseline } = await remoteTarget()
    const junk = Buffer.from([0xc1, 0xc1])
    const calls: Promise<unknown>[] = []
    for (let i = 0; i < 100_000; i++) {
      await raw.send([junk])
      if (i % 10_000 === 0) calls.push(sum())
    }
    // Every call made during the flood was answered correctly.
    expect(await Promise.all(calls)).toEqual(Array(10).fill({ from: 'target', ok: true, reply: { S: 3, D: 1 } }))
    // The target may still be working through the flood: ask until it has seen all of it (bounded).
    let after = await stats(false)
    for (const deadline = performance.now() + 20_000; after.dropped - baseline.dropped < 100_000 && performance.now() < deadline;) {
      after = await stats(false)
    }
    after = await stats()
    expect(after.dropped - baseline.dropped).toBe(100_000)
    // Not one event per message from a stranger: it could flood the application's logs.
    expect(after.reported - baseline.reported).toBe(0)
    expect(after.served).toBe(baseline.served + 10)
    expect(after.heapUsed).toBeLessThan(baseline.heapUsed * 1.1)
    expect(after.pending).toBe(0)
  })
})

it('closing a serving peer with 500 calls in flight settles every one of them', async () => {
  const alpha = makeNode('alpha')
  const beta = makeNode('beta')
  beta.register(new Arith())
  await pair(alpha, beta)
  const calls = Array.from({ length: 500 }, () => alpha.call(['beta'], 'Arith.SumDiff', { A: 1, B: 1 }, { timeout: 10_000 }))
  await beta.close()
  const results = (await Promise.all(calls)).flat()
  expect(results).toHaveLength(500)
  for (const r of results) expect(r.ok || ['PEER_DOWN', 'TIMEOUT'].includes(r.error.code)).toBe(true)
  expect(alpha.stats().pending).toBe(0)
})
