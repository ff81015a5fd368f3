// A node closing while a peer has stopped reading and then resets its
// connection. libzmq 4.3.5 lingers a closed socket's connections to flush
// what is queued; a connection whose queue cannot leave (the peer does not
// read) and that receives data meanwhile stops its input, and if the peer
// then resets it, the next ZMTP heartbeat aborts the whole process (the
// assertion !_io_error in stream_engine_base.cpp). A process closing its
// node must end as it chooses, whatever its peers do.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import * as zmq from 'zeromq'
import { closeAll, ensureBuilt, makeNode, pair } from './helpers.js'
import { callBytes, joinBytes } from './rawpeer.js'

const CLOSER = fileURLToPath(new URL('./fixtures/closer.mjs', import.meta.url))

/** One round: a peer joins the node in its own process, stops reading, goes on sending while the node closes, then resets. */
async function closeUnderAPeerThatStopsReading(round: number): Promise<{ exit: number | string; stderr: string }> {
  // Heartbeats every 100 ms, a linger of 3 s: the window libzmq lingers in is many heartbeats wide.
  const options = { pingInterval: 100, peerTimeout: 200, linger: 3000 }
  const child = spawn(process.execPath, [CLOSER, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exit = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)))
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const address = (await lines.next()).value as string
  // Its queue holds one message and nobody reads it: the node's answers back up in TCP, and its PART with them.
  const peer = new zmq.Dealer({ linger: 0, receiveHighWaterMark: 1 })
  try {
    peer.connect(address)
    await peer.send(joinBytes({ network: 'closing', name: 'reader', incarnation: new Uint8Array(16).fill(round + 1) }))
    await peer.receive()
    const big = 'x'.repeat(64 * 1024)
    for (let i = 0; i < 200; i++) await peer.send(callBytes(i + 1, 'Echo.Back', big))
    // Once one message has come back (an answer, or a TICK), the peer reads no more: the answers back up in its queue and in TCP.
    await peer.receive()
    child.stdin!.write('close\n')
    expect((await lines.next()).value).toBe('closed')
    for (let i = 0; i < 20; i++) await peer.send(callBytes(1000 + i, 'Echo.Back', 'y'))
  } finally {
    // Unread data in its buffers: the close resets the connection.
    peer.close()
  }
  return { exit: await exit, stderr }
}

describe('closing a node', () => {
  it('a peer that stops reading and then resets its connection cannot abort the process once the node is closed', async () => {
    ensureBuilt()
    for (let round = 0; round < 3; round++) {
      const { exit, stderr } = await closeUnderAPeerThatStopsReading(round)
      expect(stderr).not.toMatch(/Assertion failed/)
      expect(exit).toBe(0)
    }
  }, 30_000)

  afterEach(closeAll)

  it('every close() call is the same close: none resolves before the sockets are closed', async () => {
    const a = makeNode('a', { linger: 5000 })
    const b = makeNode('b')
    await pair(b, a)
    const first = a.close()
    expect(a.close()).toBe(first)
    await first
    expect(a.stats()).toMatchObject({ peers: 0, connections: 0 })
  })

  it('close() waits for a peer that dialled it to read its PART, within linger: at once from a peer that reads, linger from one that does not', async () => {
    // A bilateral peer hangs up once it reads the PART: close() does not wait for the linger.
    const a = makeNode('a', { linger: 5000 })
    const b = makeNode('b')
    await pair(b, a)
    const down = new Promise<unknown[]>((resolve) => b.once('peer:down', (...args: unknown[]) => resolve(args)))
    const t0 = performance.now()
    await a.close()
    expect(performance.now() - t0).toBeLessThan(4000)
    expect((await down)[1]).toBe('PART')
    // A peer that never reads gets the whole linger, and no more.
    const c = makeNode('c', { linger: 300 })
    const address = await c.listen('tcp://127.0.0.1:*')
    const silent = new zmq.Dealer({ linger: 0, receiveHighWaterMark: 1 })
    try {
      silent.connect(address)
      await silent.send(joinBytes({ network: 'test net', name: 'silent', incarnation: new Uint8Array(16).fill(7) }))
      await silent.receive()
      const t1 = performance.now()
      await c.close()
      expect(performance.now() - t1).toBeGreaterThanOrEqual(290)
    } finally {
      silent.close()
    }
  })
})
