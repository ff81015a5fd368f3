/**
 * What strangers and hostile peers can make a node spend: work and memory
 * before a JOIN, connections and joins beyond the limits, handlers held by
 * one peer, and the heap a body may cost once decoded.
 *
 * Frames are written here with msgpack itself, from PROTOCOL.md, rather than
 * with the library's encoders, so that the same file runs against earlier
 * releases too.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { decodeMulti, encode } from '@msgpack/msgpack'
import * as zmq from 'zeromq'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { BilateralError, BilateralOptions, CallResult } from '../lib/index.js'
import { Arith, closeAll, deferred, ensureBuilt, makeNode, pair } from './helpers.js'
import { MAX_ARRAY, arraysOf } from './fixtures/msgpack-arrays.mjs'

beforeAll(ensureBuilt)

const MiB = 1024 * 1024
const TARGET = fileURLToPath(new URL('./fixtures/stranger-target.mjs', import.meta.url))

/** Raw sockets get a context of their own: zeromq's global one holds at most 1023 sockets. */
const context = new zmq.Context({ maxSockets: 16_384 })
const sockets: zmq.Dealer[] = []
const children: ChildProcess[] = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.close()
  for (const c of children.splice(0)) c.kill('SIGKILL')
  await closeAll()
})

// --- the wire, written by hand ------------------------------------------------

const JOIN = 1
const STAY = 2
const PART = 3
const CALL = 6
const ERROR = 9

const joinMessage = (name: string): Buffer[] => [Buffer.from(encode([1, JOIN, 'test net', name]))]
const callMessage = (id: number, method: string, body: Uint8Array): Uint8Array[] => [encode([1, CALL, id, method]), body]

/** The envelopes of a message to a peer that announced no maxPart: one envelope per part, bodies in parts of their own. */
function envelopes(parts: Buffer[]): unknown[][] {
  const out: unknown[][] = []
  for (let i = 0; i < parts.length; i++) {
    const envelope = [...decodeMulti(parts[i]!)][0] as unknown[]
    out.push(envelope)
    // CALL, CAST and REPLY: the body is the next part.
    if (envelope[1] === CALL || envelope[1] === 7 || envelope[1] === 8) i++
  }
  return out
}

/** `bytes` of empty maps (`0x80` each): a million objects per megabyte once decoded. */
const emptyMaps = (bytes: number): Buffer => arraysOf(Uint8Array.of(0x80), bytes - 3 - 5 * Math.ceil(bytes / MAX_ARRAY))

// --- raw sockets and the target process ----------------------------------------

function rawDealer(endpoint: string, options: Partial<zmq.Dealer> = {}): zmq.Dealer {
  const socket = new zmq.Dealer({ context, linger: 0, receiveTimeout: 5000, ...options })
  sockets.push(socket)
  // libzmq's connect() may meet EINTR when a signal lands (child processes exit around these tests); the library retries too (sockets.ts).
  for (let tries = 0; ; tries++) {
    try {
      socket.connect(endpoint)
      return socket
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EINTR' || tries >= 10) throw error
    }
  }
}

/** Read messages until one holds an envelope `done` accepts; returns the envelopes and the largest message's size. */
async function readUntil(raw: zmq.Dealer, done: (envelope: unknown[]) => boolean): Promise<{ seen: unknown[][]; largest: number }> {
  const seen: unknown[][] = []
  let largest = 0
  for (;;) {
    const parts = await raw.receive()
    const size = parts.reduce((n, p) => n + p.length, 0)
    largest = Math.max(largest, size)
    // A message of megabytes is not decoded: its size is what the test needs.
    if (size > MiB) continue
    for (const e of envelopes(parts)) {
      seen.push(e)
      if (done(e)) return { seen, largest }
    }
  }
}

type Stats = {
  served: number
  held: number
  reported: number
  refused: Record<string, number>
  refusedFrom: Record<string, number>
  heapUsed: number
  rss: number
  maxRSS: number
  stallMs: number
  dropped: number
  peers: number
  connections: number
  unjoined: number
  ignored: number
  refusedConnections: number
}

const OK_SUM = { from: 'target', ok: true, reply: { S: 3, D: 1 } }

/**
 * The target node in a child process, started with `flags` and `options`,
 * and our node `friend` joined to it and warmed up.
 */
async function remoteTarget(options: Partial<BilateralOptions> = {}, flags: string[] = []) {
  const child = spawn(process.execPath, ['--expose-gc', ...flags, TARGET, JSON.stringify(options)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.push(child)
  const [line] = (await once(child.stdout!, 'data')) as [Buffer]
  const endpoint = line.toString().trim()
  /** Rejects once the target exits: race it against what the target should answer. */
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`the target exited (code ${code}, signal ${signal})`))),
  )
  exited.catch(() => undefined)
  const alive = <T>(p: Promise<T>): Promise<T> => Promise.race([p, exited])
  const friend = makeNode('friend')
  friend.connect('target', endpoint)
  await friend.waitForPeers(['target'], { timeout: 5000 })
  const stats = async (gc = true): Promise<Stats> => {
    const [r] = await alive(friend.call<Stats>(['target'], 'Probe.Stats', gc, { timeout: 10_000 }))
    if (!r?.ok) throw new Error(`no stats: ${JSON.stringify(r)}`)
    return r.reply
  }
  /** Ask for stats until `done` holds of them, for at most `ms`; the last stats either way. */
  const statsUntil = async (done: (s: Stats) => boolean, ms: number): Promise<Stats> => {
    const deadline = performance.now() + ms
    let s = await stats(false)
    while (!done(s) && performance.now() < deadline) s = await stats(false)
    return s
  }
  const sum = async (timeout?: number): Promise<CallResult<unknown> | undefined> =>
    (await alive(friend.call(['target'], 'Arith.SumDiff', { A: 2, B: 1 }, { timeout })))[0]
  // Warm up: a thousand real calls, so caches and pools reach their working size.
  for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 100 }, () => sum()))
  await alive(friend.call(['target'], 'Probe.Reset', null))
  return { child, endpoint, friend, stats, statsUntil, sum, alive, baseline: await stats() }
}

/** Resolves once `done()` holds, checked every 10 ms; rejects with `what` after `ms`. */
async function eventually(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms
  while (!done()) {
    if (performance.now() > deadline) throw new Error(what)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`

// --- (a) before JOIN: one huge message ---------------------------------------

describe('one 16 MiB message from a stranger that never joined, against a node in its own process', () => {
  /**
   * Send `message` from a connection that never joins, then a CALL, which
   * every release answers NOT_JOINED: once that answer is back, the target
   * has handled the message before it. Returns what the stranger received.
   */
  async function strangerSends(endpoint: string, message: Uint8Array[]) {
    const raw = rawDealer(endpoint, { receiveTimeout: 15_000 })
    await raw.send(message)
    await raw.send(callMessage(1, 'Arith.SumDiff', encode({ A: 1, B: 2 })))
    return readUntil(raw, (e) => e[1] === PART && e[2] === 'NOT_JOINED')
  }

  it('a JOIN-looking envelope whose network is a 16 MiB string is dropped unread: nothing large is echoed, memory stays near its level, and the friend is served', async () => {
    const { endpoint, stats, sum, alive, baseline } = await remoteTarget()
    // Control characters: a refusal that quoted the network as JSON would be six times as long (about 100 million characters).
    const network = '\x01'.repeat(16 * MiB - 64)
    const { largest } = await alive(strangerSends(endpoint, [encode([1, JOIN, network, 'stranger'])]))
    expect(await sum()).toEqual(OK_SUM)
    const after = await stats()
    console.log(
      `16 MiB JOIN-looking message: heap ${mib(baseline.heapUsed)} → ${mib(after.heapUsed)} after GC, peak RSS ${mib(baseline.maxRSS)} → ${mib(after.maxRSS)}, longest stall ${after.stallMs.toFixed(0)} ms, largest answer ${largest} bytes`,
    )
    expect(largest).toBeLessThan(1024)
    expect(after.heapUsed).toBeLessThan(baseline.heapUsed + 16 * MiB)
    // The message itself is 16 MiB in libzmq's buffers; decoding it would build a 16 MiB string and its 100 MB quotation besides.
    expect(after.maxRSS - baseline.maxRSS).toBeLessThan(96 * MiB)
    expect(after.served).toBe(baseline.served + 1)
  })

  it('16 MiB of empty maps is dropped unread: memory stays near its level and the friend is served', async () => {
    const { endpoint, stats, sum, alive, baseline } = await remoteTarget()
    const { largest } = await alive(strangerSends(endpoint, [emptyMaps(16 * MiB - 64)]))
    expect(await sum()).toEqual(OK_SUM)
    const after = await stats()
    console.log(
      `16 MiB of empty maps: heap ${mib(baseline.heapUsed)} → ${mib(after.heapUsed)} after GC, peak RSS ${mib(baseline.maxRSS)} → ${mib(after.maxRSS)}, longest stall ${after.stallMs.toFixed(0)} ms`,
    )
    expect(largest).toBeLessThan(1024)
    expect(after.heapUsed).toBeLessThan(baseline.heapUsed + 16 * MiB)
    // Sixteen million objects would take about a gigabyte.
    expect(after.maxRSS - baseline.maxRSS).toBeLessThan(96 * MiB)
    expect(after.served).toBe(baseline.served + 1)
  })
})

// --- (b) before JOIN: a steady stream of large junk --------------------------------

it('1 MiB junk messages from a stranger at 50 a second leave a friend at least a quarter of the call rate it has without them', async () => {
  const { endpoint, sum, stats, alive } = await remoteTarget()
  /** Calls the friend completes in `ms`, four at a time. */
  const callsIn = async (ms: number): Promise<number> => {
    let done = 0
    const end = performance.now() + ms
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (performance.now() < end) if ((await sum(1000))?.ok) done++
      }),
    )
    return done
  }
  const quiet = await callsIn(1000)
  const raw = rawDealer(endpoint)
  const junk = emptyMaps(MiB)
  let sent = 0
  let sending = false
  // A steady rate: one message every 20 ms, skipped while the previous one has not left.
  const flood = setInterval(() => {
    if (sending) return
    sending = true
    void raw.send([junk]).then(
      () => (sent++, (sending = false)),
      () => (sending = false),
    )
  }, 20)
  let flooded: number
  try {
    flooded = await callsIn(1000)
  } finally {
    clearInterval(flood)
  }
  const after = await alive(stats(false))
  console.log(`friend's calls in 1 s: ${quiet} without the flood, ${flooded} during it (${sent} junk messages of 1 MiB sent)`)
  expect(sent).toBeGreaterThan(20)
  expect(flooded).toBeGreaterThanOrEqual(quiet / 4)
  expect(after.reported).toBe(0)
})

// --- (c) joined: bodies that would take more than the heap has ---------------------

it('with its heap capped at 256 MB, a node that is sent forty 4 MiB bodies of empty maps for a handler that never returns refuses each one and keeps serving', async () => {
  const { endpoint, sum, stats, alive } = await remoteTarget({}, ['--max-old-space-size=256'])
  const raw = rawDealer(endpoint, { receiveTimeout: 15_000 })
  await raw.send(joinMessage('hoarder'))
  await alive(readUntil(raw, (e) => e[1] === STAY))
  // Four million maps: about 256 MB once built, and every argument a never-ending handler gets stays alive.
  const body = emptyMaps(4 * MiB)
  const CALLS = 40
  for (let id = 1; id <= CALLS; id++) await raw.send(callMessage(id, 'Hold.Forever', body))
  const codes = new Map<number, string>()
  await alive(
    readUntil(raw, (e) => {
      if (e[1] === ERROR) codes.set(e[2] as number, e[3] as string)
      return codes.size === CALLS
    }),
  )
  for (const code of codes.values()) expect(['BAD_REQUEST', 'OVERLOADED']).toContain(code)
  expect(await sum()).toEqual(OK_SUM)
  const after = await stats()
  console.log(
    `forty 4 MiB bodies of empty maps, heap capped at 256 MB: answers ${[...new Set(codes.values())].join(', ')}; heap ${mib(after.heapUsed)} after GC, peak RSS ${mib(after.maxRSS)}`,
  )
  expect(after.held).toBe(0)
})

// --- (d) connections that never join ---------------------------------------------

describe('connections that complete the ZeroMQ handshake and never join', () => {
  /** Resolves with whether `socket`'s first handshake succeeded ('handshake') or failed ('failed'), or 'none' within 5 s. */
  const handshake = (socket: zmq.Dealer): Promise<'handshake' | 'failed' | 'none'> =>
    new Promise((resolve) => {
      const done = (how: 'handshake' | 'failed' | 'none') => (clearTimeout(timer), resolve(how))
      const timer = setTimeout(() => done('none'), 5000)
      socket.events.on('handshake', () => done('handshake'))
      socket.events.on('handshake:error:auth', () => done('failed'))
      socket.events.on('handshake:error:protocol', () => done('failed'))
      socket.events.on('handshake:error:other', () => done('failed'))
    })

  /** `n` raw DEALERs dialling `endpoint` (from `source`, if given), which retry a refused handshake only after a minute. */
  const dealers = (n: number, endpoint: string, source?: string): zmq.Dealer[] =>
    Array.from({ length: n }, () =>
      rawDealer(source === undefined ? endpoint : endpoint.replace('tcp://', `tcp://${source}:0;`), { reconnectInterval: 60_000 }),
    )

  it('5,000 of them against maxConnections 200: those beyond the limit are refused in the handshake, the rest are ignored after joinTimeout, and the friend is served', async () => {
    const { endpoint, statsUntil, sum } = await remoteTarget({ maxConnections: 200, joinTimeout: 500 })
    const N = 5000
    // A hundred at a time (libzmq's listen backlog is 100, and a SYN beyond it is retried only a second later):
    // the next hundred once the handshake of the last of these has been decided.
    for (let opened = 0; opened < N; opened += 100) {
      const last = await handshake(dealers(100, endpoint).at(-1)!)
      // From the third hundred on, every one is beyond the limit, and its socket is told so by its handshake.
      if (opened >= 200) expect(last).toBe('failed')
    }
    // The friend's connection is one of the 200.
    const handled = await statsUntil((s) => s.connections + s.refusedConnections >= N + 1, 5000)
    console.log(`${N} connections against maxConnections 200: ${handled.connections} open, ${handled.refusedConnections} refused`)
    expect(handled.connections).toBe(200)
    expect(handled.refusedConnections).toBeGreaterThanOrEqual(N - 199)
    const expired = await statsUntil((s) => s.ignored === 199, 5000)
    expect(expired).toMatchObject({ connections: 200, unjoined: 0, ignored: 199, peers: 1 })
    expect(await sum()).toEqual(OK_SUM)
  })

  it('one that stays silent past joinTimeout is ignored: its next message is answered PART TIMEOUT, and its JOIN is not read', async () => {
    const server = makeNode('server', { joinTimeout: 300 })
    const endpoint = await server.listen('tcp://127.0.0.1:*')
    const raw = rawDealer(endpoint)
    expect(await handshake(raw)).toBe('handshake')
    await eventually(() => server.stats().ignored === 1, 5000, 'the connection was not ignored')
    const before = server.stats().dropped
    await raw.send(joinMessage('late'))
    expect(envelopes(await raw.receive()).map((e) => e.slice(0, 3))).toEqual([[1, PART, 'TIMEOUT']])
    await raw.send(joinMessage('late'))
    await eventually(() => server.stats().dropped === before + 2, 5000, 'the second JOIN was not dropped')
    expect(server.activeConnections()).toEqual([])
    expect(server.stats()).toMatchObject({ connections: 1, unjoined: 0, ignored: 1 })
  })

  it('300 of them from one address against maxConnectionsPerAddress 50 leave room for a newcomer from another address', async () => {
    const { endpoint, statsUntil } = await remoteTarget({ maxConnectionsPerAddress: 50, joinTimeout: 500 })
    for (let opened = 0; opened < 300; opened += 100) {
      const last = await handshake(dealers(100, endpoint, '127.0.0.2').at(-1)!)
      if (opened >= 100) expect(last).toBe('failed')
    }
    const handled = await statsUntil((s) => s.connections + (s.refusedFrom?.['127.0.0.2'] ?? 0) >= 301, 10_000)
    expect(handled.refusedFrom).toEqual({ '127.0.0.2': 250 })
    expect(handled.connections).toBe(51)
    // A node from 127.0.0.1 joins and is served.
    const newcomer = makeNode('newcomer')
    newcomer.connect('target', endpoint)
    await newcomer.waitForPeers(['target'], { timeout: 5000 })
    expect(await newcomer.call(['target'], 'Arith.SumDiff', { A: 2, B: 1 })).toEqual([OK_SUM])
  })
})

// --- (e) JOINs beyond maxPeers ------------------------------------------------------

it('2,000 JOINs under distinct names against maxPeers 10 are refused OVERLOADED beyond the tenth peer, and the peer already joined is served', async () => {
  // Heartbeats every second, not every 100 ms: thousands of connections would otherwise keep libzmq's I/O threads busy with them.
  const server = makeNode('server', {
    maxPeers: 10,
    maxConnections: 4096,
    maxConnectionsPerAddress: 4096,
    pingInterval: 1000,
    peerTimeout: 3000,
  })
  const friend = makeNode('friend')
  server.register(new Arith())
  const endpoint = await pair(friend, server)
  const refused = new Map<string, number>()
  server.on('peer:refused', (_, error: BilateralError) => refused.set(error.code, (refused.get(error.code) ?? 0) + 1))
  const N = 2000
  /** The answer to one JOIN as `name` on a connection of its own. */
  const answer = async (name: string): Promise<string> => {
    const raw = rawDealer(endpoint, { receiveTimeout: 10_000 })
    await raw.send(joinMessage(name))
    const [e] = envelopes(await raw.receive())
    return e![1] === STAY ? 'STAY' : e![1] === PART ? String(e![2]) : `frame ${String(e![1])}`
  }
  // A hundred connections at a time: libzmq's listen backlog is 100, and a SYN beyond it is retried only a second later.
  const answers: string[] = []
  for (let i = 0; i < N; i += 100) answers.push(...(await Promise.all(Array.from({ length: 100 }, (_, j) => answer(`fake ${i + j}`)))))
  const counts = Object.fromEntries([...new Set(answers)].map((a) => [a, answers.filter((b) => b === a).length]))
  expect(counts).toEqual({ STAY: 9, OVERLOADED: N - 9 })
  expect(Object.fromEntries(refused)).toEqual({ OVERLOADED: N - 9 })
  expect(server.stats().peers).toBe(10)
  expect(await friend.call(['server'], 'Arith.SumDiff', { A: 2, B: 1 })).toEqual([{ from: 'server', ok: true, reply: { S: 3, D: 1 } }])
})

// --- (f) one peer's flood of long calls -----------------------------------------------

describe('a flood of long-running calls from one peer against maxConcurrent 100', () => {
  /**
   * The server, the flooder and the friend; the flooder has made 1,000
   * calls to a handler that waits for `release`, and each has started or
   * been refused.
   */
  async function flooded() {
    const server = makeNode('server', { maxConcurrent: 100 })
    const flooder = makeNode('flooder')
    const friend = makeNode('friend')
    const gate = deferred<string>()
    const started = new Map<string, number>()
    let refused = 0
    let changed = deferred()
    const change = () => {
      changed.resolve()
      changed = deferred()
    }
    /** Resolves once `done()` holds (checked at every start and refusal), rejects after 10 s. */
    const until = async (done: () => boolean, what: string): Promise<void> => {
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 10_000)))
      try {
        while (!done()) {
          if ((await Promise.race([changed.promise, late])) === 'late') {
            throw new Error(`${what}: ${JSON.stringify(Object.fromEntries(started))} started, ${refused} refused`)
          }
        }
      } finally {
        clearTimeout(timer)
      }
    }
    server.register(
      {
        Wait: (_: unknown, ctx: { from: string }) => {
          started.set(ctx.from, (started.get(ctx.from) ?? 0) + 1)
          change()
          return gate.promise
        },
      },
      'Block',
    )
    server.register(new Arith())
    const endpoint = await pair(flooder, server)
    friend.connect('server', endpoint)
    await friend.waitForPeers(['server'], { timeout: 5000 })
    const FLOOD = 1000
    const flood = Array.from({ length: FLOOD }, () =>
      flooder.call(['server'], 'Block.Wait', null, { timeout: 15_000 }).then((r) => {
        if (r[0]?.ok === false) refused++
        change()
        return r[0]!
      }),
    )
    await until(() => (started.get('flooder') ?? 0) + refused >= FLOOD, 'the flood did not settle')
    /** Let every waiting handler answer; the flood's results. */
    const release = () => (gate.resolve('done'), Promise.all(flood))
    return { server, friend, started, until, release }
  }

  it("the friend's quick calls are all served while the flooder holds its share", async () => {
    const { server, friend, started, release } = await flooded()
    const results = (await Promise.all(Array.from({ length: 100 }, () => friend.call(['server'], 'Arith.SumDiff', { A: 2, B: 1 })))).flat()
    const codes = results.map((r) => (r.ok ? 'ok' : r.error.code))
    console.log(
      `a flood of 1,000 against maxConcurrent 100: ${started.get('flooder')} of them run; of the friend's 100 quick calls ${codes.filter((c) => c === 'ok').length} are served`,
    )
    expect(codes).toEqual(Array(100).fill('ok'))
    expect(server.stats().running).toBe(started.get('flooder'))
    await release()
  })

  it("the friend's own long-running calls start too, and finish once released", async () => {
    const { friend, started, until, release } = await flooded()
    const waited = Promise.all(Array.from({ length: 5 }, () => friend.call(['server'], 'Block.Wait', null, { timeout: 15_000 })))
    await until(() => started.get('friend') === 5, "the friend's calls did not start")
    const flood = await release()
    expect((await waited).flat()).toEqual(Array(5).fill({ from: 'server', ok: true, reply: 'done' }))
    expect(flood.filter((r) => r.ok)).toHaveLength(started.get('flooder')!)
  })
})

// --- (g) what a decoded body costs -----------------------------------------------

describe('the heap a decoded body takes, measured in a process of its own', () => {
  const FIXTURE = fileURLToPath(new URL('./fixtures/body-cost.mjs', import.meta.url))
  /** lib/wire/walk.ts: HEAP_PER_BYTE and COST_SLACK. */
  const HEAP_PER_BYTE = 24
  const COST_SLACK = 16 * 1024
  /** What a heap measurement after a full GC may be off by. */
  const NOISE = 256 * 1024

  type Shape = { name: string; element: string; bytes?: number; map?: boolean }
  /** Shapes the walk lets through: the densest of each kind of value, and a map too large for V8's fast properties. */
  const decoded: Shape[] = [
    { name: 'arrays of [1, 2]', element: '920102' },
    { name: 'arrays of [1, 2, 3]', element: '93010203' },
    { name: 'arrays of {a: 1}', element: '81a16101' },
    { name: 'arrays of {a: 1, b: 2}', element: '82a16101a16202' },
    { name: 'two-character strings', element: 'a26162' },
    { name: 'one-character strings outside Latin-1', element: 'a2c480' },
    { name: 'three-byte binaries', element: 'c403010203' },
    { name: 'float64s', element: 'cb400921fb54442d18' },
    { name: 'uint64s (BigInts)', element: 'cf8000000000000001' },
    { name: 'int64s (BigInts)', element: 'd38000000000000001' },
    { name: 'uint32s beyond the small integers', element: 'cefffffffe' },
    { name: '64-bit timestamps (Dates)', element: 'd7ff000000045f5e1000' },
    { name: '8-byte extensions', element: 'd7010102030405060708' },
    { name: '16-byte extensions', element: 'd8010102030405060708090a0b0c0d0e0f10' },
    { name: 'nils', element: 'c0' },
    { name: 'one map of 150,000 distinct keys', element: 'c0', map: true },
  ]
  /** Shapes denser than HEAP_PER_BYTE: refused before they are built. */
  const refused: Shape[] = [
    { name: 'arrays of {}', element: '80' },
    { name: 'arrays of []', element: '90' },
    { name: 'arrays of [[]]', element: '9190' },
    { name: 'arrays of [1]', element: '9101' },
    { name: 'arrays of {a: []}', element: '81a16190' },
    { name: 'arrays of [{}, {}]', element: '928080' },
    { name: 'empty binaries', element: 'c400' },
    { name: '1-byte extensions', element: 'd40100' },
    { name: '32-bit timestamps (Dates)', element: 'd6ff5f5e1000' },
  ]
  /**
   * Maps whose keys are array indices (integers, or strings such as "0"):
   * V8 stores them as elements, with room for the index and more
   * ({1000: nil}, five bytes, takes about 12 KiB). The walk charges them, so
   * they are refused. Small bodies: before it did, a 64 KiB one took 160 MB.
   */
  const indexKeys: Shape[] = [
    { name: 'arrays of {"0": nil}', element: '81a130c0', bytes: 64 * 1024 },
    { name: 'arrays of {0: nil, 1: nil}', element: '8200c001c0', bytes: 64 * 1024 },
    { name: 'arrays of {1000: nil}', element: '81cd03e8c0', bytes: 64 * 1024 },
    { name: 'arrays of {"1000": nil}', element: '81a431303030c0', bytes: 64 * 1024 },
    { name: 'arrays of {4000000000: nil}', element: '81ceee6b2800c0', bytes: 64 * 1024 },
  ]
  type Measured = { name: string; bytes: number; heap: number; error?: string }
  const measured = new Map<string, Measured>()

  beforeAll(async () => {
    const shapes = [...decoded, ...refused, ...indexKeys].map((s) => {
      const size = s.element.length / 2
      const count = s.map ? 150_000 : Math.min(MAX_ARRAY, Math.floor((s.bytes ?? MiB) / size))
      return { name: s.name, element: s.element, map: s.map, count }
    })
    const child = spawn(process.execPath, ['--expose-gc', FIXTURE, JSON.stringify(shapes)], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    let out = ''
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()))
    const [code] = (await once(child, 'exit', { signal: AbortSignal.timeout(15_000) })) as [number | null]
    if (code !== 0) throw new Error(`body-cost.mjs exited with ${code}`)
    for (const m of JSON.parse(out) as Measured[]) measured.set(m.name, m)
    console.log(
      [...measured.values()]
        .map(
          (m) =>
            `${m.name}: ${m.bytes} bytes, ${(m.heap / m.bytes).toFixed(1)} bytes of heap a byte${m.error === undefined ? '' : ' (refused)'}`,
        )
        .join('\n'),
    )
  }, 20_000)

  it.each(decoded.map((s) => s.name))('a body of %s decodes within 24 bytes of heap a byte', (name) => {
    const m = measured.get(name)!
    expect(m.error).toBeUndefined()
    expect(m.heap).toBeLessThanOrEqual(HEAP_PER_BYTE * m.bytes + COST_SLACK + NOISE)
  })

  it.each(refused.map((s) => s.name))('a body of %s is refused before it is built', (name) => {
    const m = measured.get(name)!
    expect(m.error).toMatch(/it would take about \d+ bytes of heap/)
    expect(m.heap).toBeLessThan(NOISE)
  })

  // Maps keyed by array indices: V8 stores such keys as elements sized by the largest, which walk.ts charges.
  it.each(indexKeys.map((s) => s.name))('a body of %s is refused, or decodes within 24 bytes of heap a byte', (name) => {
    const m = measured.get(name)!
    if (m.error === undefined) expect(m.heap).toBeLessThanOrEqual(HEAP_PER_BYTE * m.bytes + COST_SLACK + NOISE)
    else expect(m.heap).toBeLessThan(NOISE)
  })
})
