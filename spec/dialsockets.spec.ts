// A node dials every peer from one ROUTER (sockets.ts DialSockets): each dial
// is a connect() with a routing id of its own. These tests drive it with real
// sockets: what each dial is told, and in what order, must be what a DEALER
// of its own told it (the dialler, dial.ts, relies on that), and no dial may
// hear of another's events.
import { createServer, type Server } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import * as zmq from 'zeromq'
import { DialSockets, SocketContext, type DialEvents, type SocketSettings } from '../lib/mesh/sockets.js'
import { deferred, until, within } from './helpers.js'

const opened: { close(): void }[] = []
afterEach(() => {
  for (const x of opened.splice(0)) x.close()
})

function settings(context: SocketContext): SocketSettings {
  return {
    linger: 200,
    maxMessageSize: 1 << 20,
    reconnectMin: 20,
    reconnectMax: 200,
    heartbeatInterval: 1000,
    heartbeatTimeout: 1000,
    heartbeatTimeToLive: 0,
    handshakeInterval: 2000,
    sendQueue: 1000,
    context,
  }
}

/** What a dial was told, in order. */
function recorder(): { log: string[]; events: DialEvents } {
  const log: string[] = []
  return {
    log,
    events: {
      message: (parts) => log.push(`message ${parts.map((p) => p.toString()).join('|')}`),
      connected: () => log.push('connected'),
      dropped: () => log.push('dropped'),
      unreachable: () => log.push('unreachable'),
      failed: (failure) => log.push(`failed ${failure.code}`),
      error: (error) => log.push(`error ${String(error)}`),
    },
  }
}

/** A listener that answers each message with `echo <it>`. */
async function echo(context: SocketContext, address = 'tcp://127.0.0.1:*'): Promise<{ socket: zmq.Router; address: string }> {
  const socket = new zmq.Router({ context: context.zmq, linger: 0 })
  opened.push(socket)
  await socket.bind(address)
  void (async () => {
    try {
      for (;;) {
        const [id, ...parts] = await socket.receive()
        await socket.send([id!, `echo ${parts.map((p) => p.toString()).join('|')}`])
      }
    } catch {
      // closed
    }
  })()
  return { socket, address: socket.lastEndpoint! }
}

function make(): { dials: DialSockets; context: SocketContext } {
  const context = SocketContext.take()
  context.release()
  const dials = new DialSockets(settings(context), () => true)
  opened.push(dials)
  return { dials, context }
}

describe('dialling from one ROUTER', () => {
  it('dials to different addresses share one socket, each hears only its own replies, and the socket closes with its last dial', async () => {
    const { dials, context } = make()
    const listeners = await Promise.all([echo(context), echo(context), echo(context)])
    const rec = listeners.map(() => recorder())
    const ports = listeners.map((l, i) => dials.open(l.address, undefined, rec[i]!.events))
    expect(dials.sockets).toBe(1)
    ports.forEach((p, i) => void p.send([Buffer.from(`hello ${i}`)]))
    await until(() => rec.every((r) => r.log.some((l) => l.startsWith('message'))), 5000, 'every echo')
    rec.forEach((r, i) => expect(r.log.filter((l) => l.startsWith('message'))).toEqual([`message echo hello ${i}`]))
    await until(() => ports.every((p) => p.connected), 5000, 'every handshake')
    for (const p of ports) p.close()
    expect(dials.sockets).toBe(0)
    // A dial let go is gone: a send says so, and nothing more reaches it.
    expect(await ports[0]!.send([Buffer.from('late')])).toBe('gone')
  })

  it('a second dial to an address dialled already, or dialled and let go, gets a socket of its own', async () => {
    const { dials, context } = make()
    const listener = await echo(context)
    const [a, b, c] = [recorder(), recorder(), recorder()]
    const first = dials.open(listener.address, undefined, a.events)
    const second = dials.open(listener.address, undefined, b.events)
    expect(dials.sockets).toBe(2)
    void first.send([Buffer.from('one')])
    void second.send([Buffer.from('two')])
    await until(() => a.log.includes('message echo one') && b.log.includes('message echo two'), 5000, 'both echoes')
    expect(a.log).not.toContain('message echo two')
    expect(b.log).not.toContain('message echo one')
    second.close()
    expect(dials.sockets).toBe(1)
    // Let go, on a socket still open (another dial holds it): a monitor event of the old dial, read however late, must not
    // reach the new one, so the new one goes to a socket of its own. (A socket whose last dial ends closes, events and all.)
    const other = await echo(context)
    const keep = dials.open(other.address, undefined, recorder().events)
    expect(dials.sockets).toBe(1)
    first.close()
    const third = dials.open(listener.address, undefined, c.events)
    expect(dials.sockets).toBe(2)
    void third.send([Buffer.from('three')])
    await until(() => c.log.includes('message echo three'), 5000, 'the third echo')
    third.close()
    keep.close()
    expect(dials.sockets).toBe(0)
  })

  it('a dropped connection arrives after everything it delivered, and the next connection serves the same dial', async () => {
    const { dials, context } = make()
    const listener = await echo(context)
    const r = recorder()
    const port = dials.open(listener.address, undefined, r.events)
    for (let i = 0; i < 3; i++) void port.send([Buffer.from(`m${i}`)])
    await until(() => r.log.filter((l) => l.startsWith('message')).length === 3, 5000, 'three echoes')
    // The listener goes away and comes back on the same address: libzmq reconnects the dial by itself.
    listener.socket.close()
    await until(() => r.log.includes('dropped'), 5000, 'the drop')
    // In order with the data; the handshake comes from the monitor, which races the data, so it is checked on its own.
    await until(() => r.log.includes('connected'), 5000, 'the first handshake')
    expect(r.log.filter((l) => l !== 'unreachable' && l !== 'connected')).toEqual([
      'message echo m0',
      'message echo m1',
      'message echo m2',
      'dropped',
    ])
    expect(port.connected).toBe(false)
    await within(rebind(context, listener.address), 5000, 'the rebind')
    void port.send([Buffer.from('again')])
    await until(() => r.log.includes('message echo again'), 5000, 'the echo on the new connection')
    await until(() => port.connected, 5000, 'the second handshake')
    expect(r.log.filter((l) => l === 'connected')).toHaveLength(2)
    port.close()
  })

  it('a handshake that fails on one dial is told to that dial alone; the others on the socket go on', async () => {
    const { dials, context } = make()
    const good = await echo(context)
    const http = await notZeromq()
    const [g, h] = [recorder(), recorder()]
    const ok = dials.open(good.address, undefined, g.events)
    const bad = dials.open(`tcp://127.0.0.1:${(http.address() as { port: number }).port}`, undefined, h.events)
    expect(dials.sockets).toBe(1)
    await until(() => h.log.some((l) => l.startsWith('failed')), 5000, 'the failure')
    expect(h.log.find((l) => l.startsWith('failed'))).toBe('failed HANDSHAKE')
    expect(g.log.some((l) => l.startsWith('failed'))).toBe(false)
    void ok.send([Buffer.from('still')])
    await until(() => g.log.includes('message echo still'), 5000, 'the good dial echoed')
    expect(await bad.send([Buffer.from('x')])).not.toBe('sent')
    bad.close()
    ok.close()
  })

  it('a dial by host name still hears of its handshakes and failures after its first connection dropped', async () => {
    // libzmq names a reconnection's events by the address it resolved, not the one given: such a dial has a socket of its own.
    const { dials, context } = make()
    const listener = await echo(context)
    const port = listener.address.split(':').pop()!
    const numeric = await echo(context)
    const [r, n] = [recorder(), recorder()]
    const byName = dials.open(`tcp://localhost:${port}`, undefined, r.events)
    const byAddress = dials.open(numeric.address, undefined, n.events)
    await until(() => byName.connected && byAddress.connected, 5000, 'both handshakes')
    listener.socket.close()
    await until(() => r.log.includes('dropped'), 5000, 'the drop')
    // Something that is not ZeroMQ takes the port: the dial's next handshake fails, and it is told so.
    const junk = await within(
      retried(() => notZeromq(Number(port))),
      5000,
      'the junk server',
    )
    await until(() => r.log.includes('failed HANDSHAKE'), 5000, 'the failure after the drop')
    expect(n.log.some((l) => l.startsWith('failed'))).toBe(false)
    junk.close()
    byName.close()
    // A new dial (the dialler's next attempt) to the listener back on that port comes up.
    await within(rebind(context, listener.address), 5000, 'the rebind')
    const again = dials.open(`tcp://localhost:${port}`, undefined, recorder().events)
    await until(() => again.connected, 5000, 'the new dial’s handshake')
    again.close()
    byAddress.close()
  })

  it('a dial whose handlers throw stops nothing for the other dials on its socket', async () => {
    const { dials, context } = make()
    const [one, two] = await Promise.all([echo(context), echo(context)])
    const thrown: string[] = []
    const faulty: DialEvents = {
      ...recorder().events,
      message: () => {
        throw new Error('a handler bug')
      },
      error: (error) => {
        thrown.push(String(error))
        throw new Error('and its report too')
      },
    }
    const bad = dials.open(one.address, undefined, faulty)
    const good = recorder()
    const ok = dials.open(two.address, undefined, good.events)
    expect(dials.sockets).toBe(1)
    void bad.send([Buffer.from('x')])
    await until(() => thrown.length > 0, 5000, 'the handler’s throw')
    void ok.send([Buffer.from('after')])
    await until(() => good.log.includes('message echo after'), 5000, 'the other dial’s echo')
    void bad.send([Buffer.from('y')])
    await until(() => thrown.length > 1, 5000, 'the second throw, read all the same')
    bad.close()
    ok.close()
  })

  it('an encrypted socket dials each peer with that peer’s key: a wrong one fails that dial alone', async () => {
    const own = zmq.curveKeyPair()
    const keys = [zmq.curveKeyPair(), zmq.curveKeyPair(), zmq.curveKeyPair()]
    const context = SocketContext.take()
    context.release()
    const dials = new DialSockets({ ...settings(context), curve: own }, () => true)
    opened.push(dials)
    // Listeners in a context of their own: no ZAP handler of ours decides for them.
    const theirs = new zmq.Context()
    const at = await Promise.all(
      keys.map(async (k) => {
        const socket = new zmq.Router({
          context: theirs,
          linger: 0,
          curveServer: true,
          curveSecretKey: k.secretKey,
          curvePublicKey: k.publicKey,
        })
        opened.push(socket)
        await socket.bind('tcp://127.0.0.1:*')
        return socket.lastEndpoint!
      }),
    )
    const [a, b, wrong] = [recorder(), recorder(), recorder()]
    const pa = dials.open(at[0]!, keys[0]!.publicKey, a.events)
    const pb = dials.open(at[1]!, keys[1]!.publicKey, b.events)
    // The third listener dialled under the first's key: it cannot prove it holds that key's secret.
    const pw = dials.open(at[2]!, keys[0]!.publicKey, wrong.events)
    expect(dials.sockets).toBe(1)
    await until(() => pa.connected && pb.connected, 5000, 'both right keys handshaking')
    await until(() => wrong.log.some((l) => l.startsWith('failed')), 5000, 'the wrong key failing')
    expect(a.log.concat(b.log).some((l) => l.startsWith('failed'))).toBe(false)
    expect(pw.connected).toBe(false)
    for (const p of [pa, pb, pw]) p.close()
  })

  it('a dial closed after its PART is let go as soon as the peer hangs up, not at the end of linger', async () => {
    const context = SocketContext.take()
    context.release()
    const dials = new DialSockets({ ...settings(context), linger: 10_000 }, () => true)
    opened.push(dials)
    const listener = await echo(context)
    const port = dials.open(listener.address, undefined, recorder().events)
    await until(() => port.connected, 5000, 'the handshake')
    void port.send([Buffer.from('PART')])
    port.close(true)
    expect(dials.sockets).toBe(1)
    listener.socket.close()
    await until(() => dials.sockets === 0, 3000, 'the dial let go when its peer hung up')
  })

  it('sets each dial’s options without a process warning', async () => {
    const { dials, context } = make()
    const warnings: string[] = []
    const listen = (w: Error): void => void warnings.push(w.message)
    process.on('warning', listen)
    try {
      const listeners = await Promise.all([echo(context), echo(context)])
      const ports = listeners.map((l) => dials.open(l.address, undefined, recorder().events))
      await until(() => ports.every((p) => p.connected), 5000, 'both handshakes')
      const seen = deferred()
      setImmediate(seen.resolve)
      await seen.promise
      for (const p of ports) p.close()
    } finally {
      process.off('warning', listen)
    }
    expect(warnings).toEqual([])
  })

  it('a dial that cannot be made leaves no socket open, and a closed set dials no more', async () => {
    const { dials } = make()
    expect(() => dials.open('tcp://no port here', undefined, recorder().events)).toThrow()
    expect(dials.sockets).toBe(0)
    dials.close()
    expect(() => dials.open('tcp://127.0.0.1:1', undefined, recorder().events)).toThrow(/closed/)
    const context = SocketContext.take()
    context.release()
    const none = new DialSockets(settings(context), () => false)
    expect(() => none.open('tcp://127.0.0.1:1', undefined, recorder().events)).toThrow(/file descriptors/)
    expect(none.sockets).toBe(0)
  })
})

/** Bind a fresh echo listener on `address` once libzmq lets the old one's port go. */
const rebind = async (context: SocketContext, address: string): Promise<zmq.Router> => (await retried(() => echo(context, address))).socket

/** `bind` again, 50 times at most, 20 ms apart, while the port is still taken (libzmq lets a closed socket's port go in its own time). */
async function retried<T>(bind: () => Promise<T>): Promise<T> {
  for (let tries = 0; ; tries++) {
    try {
      return await bind()
    } catch (error) {
      if (tries >= 50) throw error
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

/** A TCP server that answers anything with HTTP, as a dial to a wrong port might meet. */
async function notZeromq(port = 0): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => {})
    socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')
  })
  opened.push(server)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  return server
}
