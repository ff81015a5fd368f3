// Nodes' sockets are spread over a few libzmq contexts, each node in the one
// that holds the fewest (sockets.ts says why: closing many nodes' sockets in
// one context aborted processes), and no more than MAX_CONTEXTS are made,
// since libzmq keeps a context's thread until the process exits.
import { afterEach, describe, expect, it } from 'vitest'
import * as zmq from 'zeromq'
import { MAX_CONTEXTS, SocketContext, socketsFor } from '../lib/mesh/sockets.js'
import { Bilateral, generateKeypair } from '../lib/index.js'
import { closeAll, makeNode, pair } from './helpers.js'

afterEach(closeAll)

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

describe('libzmq contexts', () => {
  it('spread open nodes evenly over at most MAX_CONTEXTS, and are reused, not made anew, after nodes close', async () => {
    const start = SocketContext.census()
    const nodes = Array.from({ length: 2 * MAX_CONTEXTS + 1 }, (_, i) => makeNode(`ctx-${i}`))
    const during = SocketContext.census()
    expect(during.length).toBe(MAX_CONTEXTS)
    expect(sum(during) - sum(start)).toBe(nodes.length)
    expect(Math.max(...during) - Math.min(...during)).toBeLessThanOrEqual(1)

    // Nodes in different contexts, and in the same one, link and call as ever.
    await pair(nodes[0]!, nodes[1]!)
    await pair(nodes[0]!, nodes[MAX_CONTEXTS]!)
    expect(nodes[0]!.peers().map((p) => p.state)).toEqual(['up', 'up'])

    await Promise.all(nodes.map((n) => n.close()))
    expect(SocketContext.census()).toEqual(during.map(() => 0))
    const again = makeNode('ctx-again')
    await again.listen('tcp://127.0.0.1:*')
    expect(SocketContext.census().length).toBe(MAX_CONTEXTS)
    expect(sum(SocketContext.census())).toBe(1)
  })

  it('a node whose constructor throws holds no place in a context', async () => {
    const [own, other] = [await generateKeypair(), await generateKeypair()]
    const before = SocketContext.census()
    // Refused after the mesh is made: a seed's key that authorizedKeys does not admit.
    const make = () =>
      new Bilateral({ network: 'test net', keypair: own, authorizedKeys: [], seeds: [`${other.publicKey}@tcp://127.0.0.1:1`] })
    expect(make).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(SocketContext.census()).toEqual(before)
  })

  it('a ZAP handler that cannot bind fails that listen() with BIND_FAILED, and a later listen() binds once it can', async () => {
    // The context the next node takes (all are empty: the first of them), its ZAP endpoint taken by someone else.
    const context = SocketContext.take()
    context.release()
    const squatter = new zmq.Router({ context: context.zmq, linger: 0 })
    squatter.bindSync('inproc://zeromq.zap.01')
    const node = makeNode('ctx-zap')
    try {
      await expect(node.listen('tcp://127.0.0.1:*')).rejects.toMatchObject({ code: 'BIND_FAILED' })
    } finally {
      squatter.close()
    }
    // Freed in libzmq's reaper a moment later: the next listen() waits for it, binds, and its handler decides.
    const endpoint = await node.listen('tcp://127.0.0.1:*')
    const dialler = makeNode('ctx-zap-dialler')
    dialler.connect('ctx-zap', endpoint)
    await dialler.waitForPeers(['ctx-zap'], { timeout: 5000 })
  })

  it('a ZAP handler socket that cannot be made (EMFILE) leaves no domain behind', () => {
    // A context with room for no more sockets (libzmq's cap reached): made directly, the way take() would.
    const Make = SocketContext as unknown as new (maxSockets: number) => SocketContext
    const full = new Make(1)
    const held = () => (full.zap as unknown as { domains: Map<string, unknown> }).domains.size
    const policy = { before: () => undefined, decide: () => 200 as const }
    const filler = new zmq.Router({ context: full.zmq, linger: 0 })
    try {
      expect(() => full.zap.register(policy)).toThrow()
      expect(held()).toBe(0)
    } finally {
      filler.close()
    }
  })

  it('sizes a context by the process’s descriptors: a socket holds at least one', () => {
    expect(socketsFor(20_000)).toBe(20_064)
    expect(socketsFor(1024)).toBe(1088)
    expect(socketsFor(1_048_576)).toBe(65_536)
    expect(socketsFor(undefined)).toBe(65_536)
  })
})
