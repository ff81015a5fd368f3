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
import { describe, expect, it } from 'vitest'
import * as zmq from 'zeromq'
import { ensureBuilt } from './helpers.js'
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
    // The node has answered some: those it has sent fill the peer's queue and both TCP buffers.
    await new Promise((resolve) => setTimeout(resolve, 200))
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
})
