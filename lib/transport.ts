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
  /** ZMTP heartbeats, run by libzmq's I/O thread even while JavaScript is busy: a PING every `heartbeatInterval` ms (0 = off). */
  heartbeatInterval: number
  /** Close a connection that has sent nothing for this long after a PING, ms. */
  heartbeatTimeout: number
  /** Asks the other side to close the connection after this long without traffic from us, ms. */
  heartbeatTimeToLive: number
  /** CURVE keys (Z85) of an encrypted node; absent for plaintext. */
  curve?: { publicKey: string; secretKey: string }
  /** The ZeroMQ context of the node's sockets (its own when encrypted, for its own ZAP handler). */
  context?: zmq.Context
}

/** A failed ZMTP handshake: `AUTH` when the ZAP handler refused the key, `HANDSHAKE` otherwise (for example, plaintext meeting CURVE). */
export type HandshakeFailure = { code: 'AUTH' | 'HANDSHAKE'; address: string; message: string }
export type OnHandshakeFailure = (failure: HandshakeFailure) => void

const ZAP_ENDPOINT = 'inproc://zeromq.zap.01'
const ZAP_DOMAIN = 'bilateral'

/**
 * libzmq caps a context at 1023 sockets by default, and every dialled peer
 * costs three (the DEALER and its monitor pair), so a node with a few hundred
 * peers would hit it. Our contexts raise the cap; the process's fd limit
 * still applies.
 */
const MAX_SOCKETS = 65_536

/**
 * Messages libzmq holds per connection before it stops reading that
 * connection (default 1,000). Once it stops, it no longer reads heartbeat
 * replies either and closes the connection: a node whose handler blocked its
 * event loop while a peer kept sending would be taken for dead within
 * peerTimeout. 100,000 covers a minute's stall (stallTimeout) at well over a
 * thousand messages a second, and is still a bound.
 */
const RECEIVE_QUEUE = 100_000

/** The context shared by plaintext nodes (not zeromq's global one, whose settings belong to the application). */
let shared: zmq.Context | undefined
export function sharedContext(): zmq.Context {
  shared ??= new zmq.Context({ maxSockets: MAX_SOCKETS })
  return shared
}

/** A fresh context for one encrypted node, so its ZAP handler serves only its own sockets. */
export function newContext(): zmq.Context {
  return new zmq.Context({ maxSockets: MAX_SOCKETS })
}

/**
 * The ZAP handler (RFC 27) of one encrypted node: ZeroMQ asks it, during each
 * CURVE handshake on the node's ROUTER, whether the client's key may connect.
 */
export class ZapHandler {
  private readonly socket: zmq.Router
  readonly ready: Promise<void>

  constructor(
    context: zmq.Context,
    private readonly authorize: (publicKey: Uint8Array) => boolean,
  ) {
    this.socket = new zmq.Router({ context, linger: 0 })
    this.ready = this.socket.bind(ZAP_ENDPOINT)
    void this.loop()
  }

  close(): void {
    this.socket.close()
  }

  private async loop(): Promise<void> {
    try {
      await this.ready
      for await (const [routingId, empty, version, requestId, , , , mechanism, key] of this.socket) {
        let ok = false
        try {
          ok = version?.toString() === '1.0' && mechanism?.toString() === 'CURVE' && key?.length === 32 && this.authorize(key)
        } catch {
          ok = false
        }
        const reply = [routingId!, empty!, '1.0', requestId!, ok ? '200' : '400', ok ? 'OK' : 'key not authorised', '', '']
        void this.socket.send(reply).catch(() => undefined)
      }
    } catch {
      // Closed, or the endpoint is taken: handshakes then fail closed in ZeroMQ.
    }
  }
}

function watchHandshakes(socket: zmq.Socket, onFailure: OnHandshakeFailure): void {
  socket.events.on('handshake:error:auth', (e) => onFailure({ code: 'AUTH', address: e.address, message: e.error.message }))
  socket.events.on('handshake:error:protocol', (e) => onFailure({ code: 'HANDSHAKE', address: e.address, message: e.error.message }))
  socket.events.on('handshake:error:other', (e) => onFailure({ code: 'HANDSHAKE', address: e.address, message: e.error.message }))
}

function curveServerOptions(s: SocketSettings): Partial<zmq.Router> {
  if (s.curve === undefined) return {}
  return { curveServer: true, curveSecretKey: s.curve.secretKey, curvePublicKey: s.curve.publicKey, zapDomain: ZAP_DOMAIN }
}

export type OnMessage = (parts: Buffer[]) => void
export type OnRouterMessage = (routingId: Buffer, parts: Buffer[]) => void
/** What became of a message sent to one routing id: queued, refused for a full queue, or refused because no such connection exists. */
export type Delivery = 'sent' | 'full' | 'gone'

function heartbeats(s: SocketSettings): Partial<zmq.Router & zmq.Dealer> {
  return {
    heartbeatInterval: s.heartbeatInterval,
    heartbeatTimeout: s.heartbeatTimeout,
    heartbeatTimeToLive: s.heartbeatTimeToLive,
  }
}

/** The ROUTER socket peers dial into. Created on the first `bind()`. */
export class RouterPort {
  private socket: zmq.Router | undefined
  private closed = false

  constructor(
    private readonly settings: SocketSettings,
    private readonly onMessage: OnRouterMessage,
    private readonly onFailure: (error: unknown) => void,
    private readonly onHandshakeFailure: OnHandshakeFailure,
    /** A connection closed (by its peer, or by libzmq when its heartbeats stopped); which one, the monitor cannot say. */
    private readonly onDisconnect: () => void,
  ) {}

  /**
   * Bind to `address`; returns the bound endpoint (with the port the system
   * chose for `*`). Synchronously: zeromq.js's async bind blocks the whole
   * socket (EBUSY) while a worker thread binds, and a receive or send in that
   * window failed. That once ended this port's receive loop when a JOIN
   * arrived mid-bind, leaving the node deaf on its ROUTER. Binding a TCP or
   * IPC address takes microseconds.
   */
  bind(address: string): string {
    const socket = this.open()
    socket.bindSync(address)
    return socket.lastEndpoint ?? address
  }

  /** Send to the peer behind `routingId`. Resolves false if that peer is gone or its queue is full. */
  send(routingId: Buffer, parts: Uint8Array[]): Promise<boolean> {
    return this.attempt(routingId, parts, yes, no, false)
  }

  /** Are messages from any connection waiting to be read? */
  get readable(): boolean {
    return this.socket !== undefined && !this.closed && this.socket.readable
  }

  /**
   * Send to `routingId` and say what happened: with ROUTER_MANDATORY a
   * connection libzmq has closed is 'gone' at once, which is how a dead
   * inbound link is told from a quiet one.
   */
  deliver(routingId: Buffer, parts: Uint8Array[]): Promise<Delivery> {
    return this.attempt<Delivery>(routingId, parts, sent, delivery, 'gone')
  }

  /** One send, its outcome mapped by `ok`/`failed` (one promise reaction: this is every reply's path). */
  private attempt<T>(routingId: Buffer, parts: Uint8Array[], ok: () => T, failed: (error: unknown) => T, closed: T): Promise<T> {
    const socket = this.socket
    if (socket === undefined || this.closed) return Promise.resolve(closed)
    try {
      return socket.send([routingId, ...parts]).then(ok, failed)
    } catch (error) {
      return Promise.resolve(failed(error))
    }
  }

  /**
   * Close; queued frames (PART) get `linger` ms to leave. Not unbind() first:
   * libzmq's unbind also tears down the accepted connections, and racing that
   * with close aborted the process (an assertion in libzmq's pipe.cpp).
   * libzmq frees the listening port a moment later, in its I/O thread.
   */
  close(): void {
    this.closed = true
    this.socket?.close()
  }

  private open(): zmq.Router {
    if (this.socket !== undefined) return this.socket
    const s = this.settings
    const socket = new zmq.Router({
      ...(s.context === undefined ? {} : { context: s.context }),
      ...curveServerOptions(s),
      mandatory: true,
      sendTimeout: 0,
      receiveHighWaterMark: RECEIVE_QUEUE,
      linger: s.linger,
      maxMessageSize: s.maxMessageSize,
      ...heartbeats(s),
    })
    this.socket = socket
    watchHandshakes(socket, this.onHandshakeFailure)
    socket.events.on('disconnect', () => {
      if (!this.closed) this.onDisconnect()
    })
    void this.loop(socket)
    return socket
  }

  private async loop(socket: zmq.Router): Promise<void> {
    try {
      // receive() itself, not the async iterator, which adds a promise and an async call per message.
      for (;;) {
        const parts = await socket.receive()
        const routingId = parts.shift()
        if (routingId === undefined) continue
        // One bad message (or a throwing event listener above us) must not end the loop.
        try {
          this.onMessage(routingId, parts)
        } catch (error) {
          this.onFailure(error)
        }
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
  /** Whether a connection has completed its ZeroMQ handshake and not dropped since, or a message proved it. */
  connected = false
  /** The same, by the socket monitor alone: a message read after the connection dropped does not set it. */
  up = false

  /**
   * Dial `address`; on an encrypted node, `serverKey` is the peer's public key
   * and the CURVE handshake proves the peer holds its secret.
   *
   * Not `immediate`: with it, libzmq drops messages already received but not
   * yet read when the connection closes, so a PART sent just before a peer
   * exits could be lost. Without it, messages sent while disconnected queue
   * (up to the high-water mark) and go out on connect.
   */
  constructor(
    address: string,
    serverKey: string | undefined,
    settings: SocketSettings,
    private readonly onMessage: OnMessage,
    onHandshakeFailure: OnHandshakeFailure,
    private readonly onFailure: (error: unknown) => void,
    /** The connection closed: the peer's host closed it, or libzmq did when its heartbeats stopped. */
    onDisconnect: () => void,
  ) {
    const curve =
      settings.curve === undefined || serverKey === undefined
        ? {}
        : { curveServerKey: serverKey, curvePublicKey: settings.curve.publicKey, curveSecretKey: settings.curve.secretKey }
    this.socket = new zmq.Dealer({
      ...(settings.context === undefined ? {} : { context: settings.context }),
      ...curve,
      sendTimeout: 0,
      receiveHighWaterMark: RECEIVE_QUEUE,
      linger: settings.linger,
      maxMessageSize: settings.maxMessageSize,
      reconnectInterval: settings.reconnectMin,
      reconnectMaxInterval: settings.reconnectMax,
      ...heartbeats(settings),
    })
    this.socket.events.on('handshake', () => (this.connected = this.up = true))
    this.socket.events.on('disconnect', () => {
      this.connected = this.up = false
      if (!this.closed) onDisconnect()
    })
    watchHandshakes(this.socket, (failure) => {
      if (!this.closed) onHandshakeFailure(failure)
    })
    this.socket.connect(address)
    void this.loop()
  }

  /** Queue `parts` as one message. Resolves false if the queue is full or the socket closed. */
  send(parts: Uint8Array[]): Promise<boolean> {
    if (this.closed) return Promise.resolve(false)
    try {
      return this.socket.send(parts).then(yes, no)
    } catch {
      return Promise.resolve(false)
    }
  }

  /** Are messages waiting to be read? */
  get readable(): boolean {
    return !this.closed && this.socket.readable
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.socket.close()
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const parts = await this.socket.receive()
        // A message is proof of a connection, even before the monitor says so.
        this.connected = true
        try {
          this.onMessage(parts)
        } catch (error) {
          this.onFailure(error)
        }
      }
    } catch (error) {
      if (!this.closed) this.onFailure(error)
    }
  }
}

const yes = (): boolean => true
const no = (): boolean => false
const sent = (): Delivery => 'sent'
/** Only EHOSTUNREACH means the connection is gone; anything else (a full queue, EAGAIN) errs towards alive. */
const delivery = (error: unknown): Delivery => ((error as { code?: unknown } | undefined)?.code === 'EHOSTUNREACH' ? 'gone' : 'full')
