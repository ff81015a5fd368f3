// Each node's sockets live in a libzmq context of its own (sockets.ts says
// why: closing many nodes' sockets in one context aborted processes), and a
// closed node's context is reused, since libzmq keeps a context's thread
// until the process exits. A context is free only once every socket of its
// node is closed, including a dialled one that stays open for its PART.
import { afterEach, describe, expect, it } from 'vitest'
import { SocketContext, socketsFor } from '../lib/mesh/sockets.js'
import { closeAll, makeNode, pair, until } from './helpers.js'

afterEach(closeAll)

describe('a libzmq context per node', () => {
  it('gives each open node its own, and reuses a closed node’s once its last socket is closed', async () => {
    const start = SocketContext.counts()
    // A long linger: a's dialled socket stays open after a.close() until b's PART comes.
    const a = makeNode('ctx-a', { linger: 5000 })
    const b = makeNode('ctx-b')
    await pair(a, b)
    const two = SocketContext.counts()
    // Two nodes open at once: two contexts in use, whether made now or taken from the pool.
    expect(two.made - start.made + (start.free - two.free)).toBe(2)

    await a.close()
    // a's ROUTER is closed, its DEALER to b still open for the PART: its context is not free yet.
    expect(SocketContext.counts().free).toBe(two.free)

    await b.close()
    // b's PART ends a's wait, and b's ROUTER closes: both contexts come back.
    await until(() => SocketContext.counts().free === two.free + 2, 4000, 'both contexts back in the pool')

    const c = makeNode('ctx-c')
    await c.listen('tcp://127.0.0.1:*')
    expect(SocketContext.counts()).toEqual({ made: two.made, free: two.free + 1 })
    // The reused context works: c takes a dial and a call.
    const d = makeNode('ctx-d')
    await pair(d, c)
    expect(SocketContext.counts().made).toBe(two.made)
    expect(d.peers().find((p) => p.name === 'ctx-c')?.state).toBe('up')
  })

  it('sizes a context by the sockets the process’s descriptors allow, three a dial', () => {
    expect(socketsFor(20_000)).toBe(15_064)
    expect(socketsFor(1024)).toBe(832)
    expect(socketsFor(1_048_576)).toBe(65_536)
    expect(socketsFor(undefined)).toBe(65_536)
  })
})
