// A benchmark server in its own process, driven over IPC by bench/run.mjs.
// It hosts whatever a scenario needs: raw ZeroMQ ROUTER echoes (the floor),
// a raw node:net echo (the reference ceiling), and bilateral nodes.
import { createServer } from 'node:net'
import * as zmq from 'zeromq'
import { decode, encode } from '@msgpack/msgpack'
import { Bilateral } from '../dist/index.js'
import { TIMINGS, firstOk, sumDiff } from './common.mjs'

const nodes = []
/** Memory before the first member (membership scale). */
let baseline
const sockets = []
let casts = 0
let castTarget = Infinity
let castWaiter

class Arith {
  SumDiff(args) {
    return sumDiff(args)
  }
}
class Echo {
  Echo(x) {
    return x
  }
}
class Counter {
  Add() {
    if (++casts >= castTarget) castWaiter?.()
  }
  WaitFor(n) {
    castTarget = n
    return casts >= n ? casts : new Promise((resolve) => (castWaiter = () => resolve(casts)))
  }
  Reset() {
    casts = 0
    castTarget = Infinity
  }
}

/**
 * The lifecycle scenarios' handler: answers at once on a node serving fast,
 * after `lag` ms on a slow one, and stops as soon as its call is cancelled
 * (ctx.signal), as a handler that honours cancellation does.
 */
class Lag {
  constructor(lag) {
    this.lag = lag
  }
  Get(args, ctx) {
    if (this.lag === 0) return sumDiff(args)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(sumDiff(args)), this.lag)
      ctx.signal.addEventListener('abort', () => (clearTimeout(timer), resolve(undefined)), { once: true })
    })
  }
}

/** Raw floor: decode {A,B} (or {data}), compute, encode, reply. */
async function rawRouter() {
  const router = new zmq.Router({ sendHighWaterMark: 100_000, receiveHighWaterMark: 100_000 })
  await router.bind('tcp://127.0.0.1:*')
  sockets.push(router)
  void (async () => {
    let counted = 0
    for await (const [id, msg] of router) {
      const value = decode(msg)
      if (value.count !== undefined) {
        // cast floor: count one-way messages, answer once the target is reached
        counted++
        if (value.count === counted) ((counted = 0), await router.send([id, encode({ done: true })]))
        continue
      }
      await router.send([id, encode(value.data !== undefined ? value : sumDiff(value))])
    }
  })()
  return router.lastEndpoint
}

/** Raw node:net echo with 4-byte length prefixes. */
async function rawNet() {
  const server = createServer((socket) => {
    let buffered = Buffer.alloc(0)
    socket.setNoDelay(true)
    socket.on('data', (chunk) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
      const out = []
      while (buffered.length >= 4) {
        const len = buffered.readUInt32BE(0)
        if (buffered.length < 4 + len) break
        const value = decode(buffered.subarray(4, 4 + len))
        buffered = buffered.subarray(4 + len)
        const reply = encode(value.data !== undefined ? value : sumDiff(value))
        const head = Buffer.alloc(4)
        head.writeUInt32BE(reply.length)
        out.push(head, reply)
      }
      if (out.length > 0) socket.write(Buffer.concat(out))
    })
    socket.on('error', () => socket.destroy())
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  sockets.push({ close: () => server.close() })
  return `tcp://127.0.0.1:${server.address().port}`
}

function bilateralNode(name, lag = 0, options = {}) {
  const node = new Bilateral({ network: 'bench', name, ...TIMINGS, ...options })
  node.register(new Lag(lag))
  node.register(new Arith())
  node.register(new Echo())
  node.register(new Counter())
  nodes.push(node)
  return node
}

const handlers = {
  /** Listening bilateral nodes plus raw routers: { count } of each. */
  async serve({ names, lag = {}, options = {} }) {
    const out = []
    for (const name of names) {
      const node = bilateralNode(name, lag[name] ?? 0, options[name])
      out.push({ name, bilateral: await node.listen('tcp://127.0.0.1:*'), zmq: await rawRouter() })
    }
    return { servers: out, net: await rawNet() }
  },
  /** A bilateral node that dials `address` (for the reverse direction). */
  async dial({ name, peer, address }) {
    const node = bilateralNode(name)
    node.connect(peer, address)
    await node.waitForPeers([peer], { timeout: 10_000 })
    return { name }
  },
  /** Scale: `count` nodes that each listen; returns their addresses. */
  async mesh({ prefix, count }) {
    await warmUp()
    const out = []
    for (let i = 0; i < count; i++) {
      const node = new Bilateral({ network: 'bench', name: `${prefix}${i}`, ...TIMINGS })
      node.register(new Arith())
      nodes.push(node)
      out.push({ name: node.name, address: await node.listen('tcp://127.0.0.1:*') })
    }
    return { nodes: out, ...(await settled()) }
  },
  /** Scale: connect each local node to the peers given for it, wait for all `expect` peers. */
  async meshConnect({ plan, expect }) {
    for (const { from, to } of plan) nodes.find((n) => n.name === from).connect(to.name, to.address)
    await Promise.all(nodes.map((node) => waitForCount(node, expect)))
    return { ...(await settled()), links: nodes.reduce((n, node) => n + node.connectionCount(), 0) }
  },
  /** Scale, later: every node calls all its peers `rounds` times, one multicast at a time. */
  async meshTraffic({ rounds }) {
    await Promise.all(
      nodes.map(async (node) => {
        for (let i = 0; i < rounds; i++) firstOk(await node.call([], 'Arith.SumDiff', { A: i, B: 1 }))
      }),
    )
    return { ...(await settled()) }
  },
  /** Scale floor: `count` raw ROUTERs, each echoing what it receives. */
  async rawMesh({ prefix, count }) {
    await rawWarmUp()
    const out = []
    for (let i = 0; i < count; i++) {
      const router = new zmq.Router({ context: meshContext() })
      await router.bind('tcp://127.0.0.1:*')
      sockets.push(router)
      void (async () => {
        for await (const [id, msg] of router) await router.send([id, msg])
      })().catch(() => undefined)
      out.push({ name: `${prefix}${i}`, address: router.lastEndpoint })
    }
    return { nodes: out, ...(await settled()) }
  },
  /** Scale floor: one raw DEALER per planned pair (with a socket monitor if `monitor`), each answered once by the ROUTER it dials. */
  async rawMeshConnect({ plan, monitor }) {
    const dealers = plan.map(({ to }) => {
      const dealer = new zmq.Dealer({ context: meshContext() })
      if (monitor) dealer.events.on('disconnect', () => undefined)
      dealer.connect(to.address)
      sockets.push(dealer)
      meshDealers.push(dealer)
      return dealer
    })
    await Promise.all(dealers.map(async (dealer) => (await dealer.send('hello'), await dealer.receive())))
    return { ...(await settled()) }
  },
  /** Scale floor, later: `rounds` round trips each way on every pair (DEALER→ROUTER echoes, both ends' pipes carry 2 × rounds). */
  async rawMeshTraffic({ rounds }) {
    await Promise.all(
      meshDealers.map(async (dealer) => {
        for (let i = 0; i < 2 * rounds; i++) await dealer.send('x')
        for (let i = 0; i < 2 * rounds; i++) await dealer.receive()
      }),
    )
    return { ...(await settled()) }
  },
  /** Membership scale: `count` members that listen, each seeded with `seed` (or the first member, with none), metrics on for $mesh bytes. */
  /** Warm the process up (run before the clock starts for what is timed after it). */
  async warm() {
    await warmUp()
    return {}
  },
  async members({ prefix, count, seed, timings }) {
    // What the process holds before its first member (warm already: `warm`): the memory rows count from here.
    baseline ??= await settled()
    const out = []
    for (let i = 0; i < count; i++) {
      const node = new Bilateral({
        network: 'bench',
        name: `${prefix}${i}`,
        ...timings,
        seeds: seed === undefined ? [] : [seed],
        metrics: true,
        introspection: false,
      })
      nodes.push(node)
      out.push({ name: node.name, address: await node.listen('tcp://127.0.0.1:*') })
    }
    return { nodes: out }
  },
  /** Addressing: `count` members with role `arith` serving Arith (the first is the seed), and as many raw routers (the floor). */
  async addressable({ count, timings }) {
    await warmUp()
    const out = []
    let seed
    for (let i = 0; i < count; i++) {
      const node = new Bilateral({ network: 'bench', name: `a${i}`, ...timings, seeds: seed === undefined ? [] : [seed], roles: ['arith'] })
      node.register(new Arith())
      nodes.push(node)
      const address = await node.listen('tcp://127.0.0.1:*')
      seed ??= address
      out.push({ name: node.name, address, zmq: await rawRouter() })
    }
    return { members: out }
  },
  /** Membership scale: when (Date.now()) every local member saw `expect` others up. */
  async membersUp({ expect }) {
    await Promise.all(nodes.map((node) => waitForCount(node, expect, 120_000)))
    const at = Date.now()
    const { user, system } = process.cpuUsage()
    const cpu = (user + system) / 1e6 - baseline.cpu
    const now = await settled()
    return { at, cpu, members: nodes.length, rss: now.rss - baseline.rss, live: now.live - baseline.live }
  },
  /** Membership scale: bytes of $mesh arguments and replies the local members sent and received so far (both directions). */
  async gossipBytes() {
    let bytes = 0
    for (const node of nodes) {
      const { outbound, inbound } = node.metrics()
      for (const side of [outbound, inbound])
        for (const [method, f] of Object.entries(side.methods)) if (method.startsWith('$mesh.')) bytes += f.bytesOut + f.bytesIn
    }
    const { user, system } = process.cpuUsage()
    return { bytes, members: nodes.length, cpu: (user + system) / 1e6 }
  },
  /** Membership scale: when (Date.now()) every local member shows `name` gone. */
  async membersDropped({ name }) {
    const gone = () => nodes.every((node) => node.members().find((m) => m.name === name)?.state === 'gone')
    const deadline = Date.now() + 60_000
    while (!gone()) {
      if (Date.now() > deadline) throw new Error(`${name} not gone everywhere within 60 s`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return { at: Date.now() }
  },
  async rss() {
    return { rss: process.memoryUsage().rss }
  },
}

/** The raw meshes' sockets outnumber the default context's limit of 1,023, as bilateral's own contexts allow. */
let rawContext
const meshDealers = []
const meshContext = () => (rawContext ??= new zmq.Context({ maxSockets: 65_536 }))

/**
 * Run the calling code hot in a pair of throwaway nodes, so that the memory
 * this costs once per process (compiled code, a grown V8 heap) is in the
 * baseline, not charged to the mesh's connections.
 */
async function warmUp() {
  const a = new Bilateral({ network: 'warm-up', name: 'a', ...TIMINGS })
  const b = new Bilateral({ network: 'warm-up', name: 'b', ...TIMINGS })
  b.register(new Arith())
  a.connect('b', await b.listen('tcp://127.0.0.1:*'))
  await a.waitForPeers(['b'], { timeout: 10_000 })
  for (let i = 0; i < 3000; i++) firstOk(await a.call(['b'], 'Arith.SumDiff', { A: i, B: 1 }))
  await Promise.all([a.close(), b.close()])
}

/** The same for the raw floor: a throwaway DEALER→ROUTER echo, run hot. */
async function rawWarmUp() {
  const router = new zmq.Router({ linger: 0 })
  await router.bind('tcp://127.0.0.1:*')
  const dealer = new zmq.Dealer({ linger: 0 })
  dealer.connect(router.lastEndpoint)
  for (let i = 0; i < 3000; i++) {
    await dealer.send('x')
    const [id, msg] = await router.receive()
    await router.send([id, msg])
    await dealer.receive()
  }
  dealer.close()
  router.close()
}

/**
 * Memory once the garbage of getting here is collected (the scale hosts run
 * with --expose-gc): resident, and live, which leaves out the part of V8's
 * heap that holds nothing (its young generation grows with the allocation
 * rate, not with connections).
 */
async function settled() {
  await new Promise((resolve) => setImmediate(resolve))
  globalThis.gc?.()
  const { rss, heapTotal, heapUsed } = process.memoryUsage()
  const { user, system } = process.cpuUsage()
  return { rss, live: rss - (heapTotal - heapUsed), cpu: (user + system) / 1e6 }
}

function waitForCount(node, expect, ms = 30_000) {
  if (node.connectionCount() >= expect) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${node.name} saw ${node.connectionCount()} of ${expect}`)), ms)
    const check = () => {
      if (node.connectionCount() >= expect) {
        clearTimeout(timer)
        node.off('peer:up', check)
        resolve()
      }
    }
    node.on('peer:up', check)
  })
}

process.on('message', async ({ id, command, args }) => {
  if (command === 'exit') {
    await Promise.all(nodes.map((n) => n.close()))
    for (const s of sockets) s.close()
    process.exit(0)
  }
  try {
    process.send({ id, ok: true, value: await handlers[command](args) })
  } catch (error) {
    process.send({ id, ok: false, error: String(error?.stack ?? error) })
  }
})
process.on('disconnect', () => process.exit(0))
