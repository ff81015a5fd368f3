import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP relay on 127.0.0.1 between a dialler and a listener, keeping a copy
 * of every byte that crosses it in either direction, and injecting faults:
 * added latency; packet loss as TCP shows it to the application (a lost
 * segment holds back everything behind it until retransmitted); bytes
 * dropped outright (a stream no longer in step); a blackhole in one direction.
 */
export class Relay {
  readonly captured: Buffer[] = []
  /** Delay added to every chunk in each direction, ms. */
  latency = 0
  /** Drop everything flowing in these directions while set. */
  blackhole = { toListener: false, toDialler: false }
  /** Chance that a chunk is lost and retransmitted: it and all behind it wait `rto` ms more. */
  loss = 0
  /** Retransmission delay of a lost chunk, ms. */
  rto = 200
  /** Drop the first byte of the next chunk in this direction for good, leaving the stream out of step. */
  dropNext = { toListener: false, toDialler: false }
  /** How many chunks were lost (and retransmitted) or dropped. */
  readonly counts = { lost: 0, dropped: 0 }
  private readonly sockets = new Set<Socket>()
  /** The socket each direction reads from, per connection. */
  private readonly readers = { toListener: new Set<Socket>(), toDialler: new Set<Socket>() }
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
        relay.readers[direction].add(from)
        // Chunks wait in order: a late one holds back those behind it, as in TCP.
        const queue: { at: number; chunk: Buffer }[] = []
        let timer: NodeJS.Timeout | undefined
        const pump = (): void => {
          timer = undefined
          const now = performance.now()
          while (queue.length > 0 && queue[0]!.at <= now) to.write(queue.shift()!.chunk)
          if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - now)
        }
        from.on('data', (chunk: Buffer) => {
          if (relay.blackhole[direction]) return
          if (relay.dropNext[direction]) {
            relay.dropNext[direction] = false
            relay.counts.dropped++
            chunk = chunk.subarray(1)
          }
          relay.captured.push(chunk)
          let delay = relay.latency
          if (relay.loss > 0 && Math.random() < relay.loss) {
            relay.counts.lost++
            delay += relay.rto
          }
          const at = Math.max(performance.now() + delay, queue.at(-1)?.at ?? 0)
          if (delay === 0 && queue.length === 0) return void to.write(chunk)
          queue.push({ at, chunk })
          if (timer === undefined) timer = setTimeout(pump, at - performance.now())
        })
        from.on('close', () => {
          clearTimeout(timer)
          relay.readers[direction].delete(from)
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

  /** Stop (or resume) reading in one direction: TCP's flow control then fills the sender's buffers and queues. */
  hold(direction: 'toListener' | 'toDialler', held: boolean): void {
    for (const socket of this.readers[direction]) {
      if (held) socket.pause()
      else socket.resume()
    }
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
