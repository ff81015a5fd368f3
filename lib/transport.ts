/**
 * The socket adapter: the only file that imports `zeromq`. It owns one ROUTER
 * for the addresses this node listens on and one DEALER per dialled peer,
 * runs one receive loop per socket, and sends without ever awaiting: every
 * socket has `sendTimeout` 0, so a send either queues at once or fails at once
 * (full queue, unknown routing id), and failures are reported, not thrown.
 */
import * as zmq from 'zeromq'

export interface SocketSettings {
  linger: number
  maxMessageSize: number
  reconnectMin: number
  reconnectMax: number
  /** ZMTP heartbeat interval, ms (0 = off). */
  heartbeatInterval: number
  heartbeatTimeout: number
}

export type OnMessage = (parts: Buffer[]) => void
export type OnRouterMessage = (routingId: Buffer, parts: Buffer[]) => void

/** The ROUTER socket peers dial into. Created on the first `bind()`. */
export class RouterPort {
  private socket: zmq.Router | undefined
  private closed = false

  constructor(
    private readonly settings: SocketSettings,
    private readonly onMessage: OnRouterMessage,
    private readonly onFailure: (error: unknown) => void,
  ) {}

  /** Bind to `address`; resolves to the bound endpoint (with the port the system chose for `*`). */
  async bind(address: string): Promise<string> {
    const socket = this.open()
    await socket.bind(address)
    return socket.lastEndpoint ?? address
  }

  /** Send to the peer behind `routingId`. Resolves false if that peer is gone or its queue is full. */
  send(routingId: Buffer, parts: Uint8Array[]): Promise<boolean> {
    const socket = this.socket
    if (socket === undefined || this.closed) return Promise.resolve(false)
    try {
      return socket.send([routingId, ...parts]).then(yes, no)
    } catch {
      return Promise.resolve(false)
    }
  }

  close(): void {
    this.closed = true
    this.socket?.close()
  }

  private open(): zmq.Router {
    if (this.socket !== undefined) return this.socket
    const s = this.settings
    const socket = new zmq.Router({
      mandatory: true,
      sendTimeout: 0,
      linger: s.linger,
      maxMessageSize: s.maxMessageSize,
      heartbeatInterval: s.heartbeatInterval,
      heartbeatTimeout: s.heartbeatTimeout,
    })
    this.socket = socket
    void this.loop(socket)
    return socket
  }

  private async loop(socket: zmq.Router): Promise<void> {
    try {
      for await (const [routingId, ...parts] of socket) {
        if (routingId !== undefined) this.onMessage(routingId, parts)
      }
    } catch (error) {
      if (!this.closed) this.onFailure(error)
    }
  }
}

/** One DEALER dialled to one peer address. */
export class DealerPort {
  private readonly socket: zmq.Dealer
  private closed = false

  /**
   * Dial `address`. `onReady` runs each time a connection completes its
   * ZeroMQ handshake (so a JOIN sent then is not lost to an unconnected pipe).
   */
  constructor(
    address: string,
    settings: SocketSettings,
    private readonly onMessage: OnMessage,
    onReady: () => void,
    private readonly onFailure: (error: unknown) => void,
  ) {
    this.socket = new zmq.Dealer({
      immediate: true,
      sendTimeout: 0,
      linger: settings.linger,
      maxMessageSize: settings.maxMessageSize,
      reconnectInterval: settings.reconnectMin,
      reconnectMaxInterval: settings.reconnectMax,
      heartbeatInterval: settings.heartbeatInterval,
      heartbeatTimeout: settings.heartbeatTimeout,
    })
    this.socket.events.on('handshake', () => {
      if (!this.closed) onReady()
    })
    this.socket.connect(address)
    void this.loop()
  }

  /** Queue `parts` as one message. Resolves false if there is no connection or the queue is full. */
  send(parts: Uint8Array[]): Promise<boolean> {
    if (this.closed) return Promise.resolve(false)
    try {
      return this.socket.send(parts).then(yes, no)
    } catch {
      return Promise.resolve(false)
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.socket.close()
  }

  private async loop(): Promise<void> {
    try {
      for await (const parts of this.socket) this.onMessage(parts)
    } catch (error) {
      if (!this.closed) this.onFailure(error)
    }
  }
}

const yes = (): boolean => true
const no = (): boolean => false
