import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP relay on 127.0.0.1 between a dialler and a listener, keeping a copy
 * of every byte that crosses it in either direction, and injecting faults:
 * added latency, or a blackhole in one direction.
 */
export class Relay {
  readonly captured: Buffer[] = []
  /** Delay added to every chunk in each direction, ms. */
  latency = 0
  /** Drop everything flowing in these directions while set. */
  blackhole = { toListener: false, toDialler: false }
  private readonly sockets = new Set<Socket>()
  private constructor(
    private readonly server: Server,
    readonly address: string,
  ) {}

  static async start(target: string): Promise<Relay> {
    const { hostname, port } = new URL(target.replace(/^tcp:/, 'http:'))
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const address = `tcp://127.0.0.1:${(server.address() as { port: number }).port}`
    const relay = new Relay(server, address)
    server.on('connection', (client) => {
      const upstream = createConnection({ host: hostname, port: Number(port) })
      for (const [from, to, direction] of [
        [client, upstream, 'toListener'],
        [upstream, client, 'toDialler'],
      ] as const) {
        relay.sockets.add(from)
        from.on('data', (chunk: Buffer) => {
          if (relay.blackhole[direction]) return
          relay.captured.push(chunk)
          if (relay.latency > 0) setTimeout(() => to.write(chunk), relay.latency)
          else to.write(chunk)
        })
        from.on('error', () => to.destroy())
        from.on('close', () => {
          relay.sockets.delete(from)
          to.destroy()
        })
      }
    })
    return relay
  }

  /** Everything captured so far, both directions, in one buffer. */
  bytes(): Buffer {
    return Buffer.concat(this.captured)
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}
