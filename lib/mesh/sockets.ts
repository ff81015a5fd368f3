/**
 * The socket adapter: the only file that imports `zeromq`. It owns one ROUTER
 * for the addresses a node listens on, one ROUTER the node dials every peer
 * from (a second one for a second dial to an address, see DialSockets), the
 * libzmq context they live in (one of a few) and its ZAP handler, which the
 * node's listening ROUTER asks during each handshake. It runs one
 * receive loop per socket and sends without ever awaiting: every socket has
 * `sendTimeout` 0, so a send either queues at once or fails at once.
 *
 * What libzmq tells us in order with the data, so nothing has to poll a
 * socket that is being read (reading `readable` there consumes libzmq's
 * edge-triggered wake-up and stalls the receive loop):
 * - listening ROUTER: a new connection arrives as an empty message
 *   (ROUTER_NOTIFY), a closed one as the one-byte message {@link GONE}
 *   (DISCONNECT_MSG), after everything that connection sent.
 * - dialling ROUTER: a dropped connection arrives as an empty message
 *   (ROUTER_NOTIFY of disconnections), after everything it sent.
 * A peer can send either itself; the layer above treats that as the peer
 * hurting only its own connection.
 */
import { isIPv4 } from 'node:net'
import * as zmq from 'zeromq'
import { FDS_PER_DIAL, readLimit } from './fds.js'

/** libzmq's draft options and flags this adapter uses (zmq_draft.h, libzmq 4.3.5). */
const ZMQ_ROUTER_NOTIFY = 97
const ZMQ_NOTIFY_CONNECT = 1
const ZMQ_NOTIFY_DISCONNECT = 2
const ZMQ_RECONNECT_STOP = 109
const ZMQ_RECONNECT_STOP_HANDSHAKE_FAILED = 0x2
const ZMQ_DISCONNECT_MSG = 111

/** The message libzmq delivers in place of a closed connection: `0xc1`, a byte msgpack never uses, so no frame is ever this. */
export const GONE = Buffer.from([0xc1])

/** Is this the dialling ROUTER's notice that a dial's connection dropped (one empty part)? */
const isDropNotice = (parts: readonly Buffer[]): boolean => parts.length === 1 && parts[0]!.length === 0

/** Is this message {@link GONE}? */
const isGone = (parts: readonly Buffer[]): boolean => parts.length === 1 && parts[0]!.length === 1 && parts[0]![0] === GONE[0]

const ZAP_ENDPOINT = 'inproc://zeromq.zap.01'

export interface SocketSettings {
  linger: number
  maxMessageSize: number
  /** libzmq's reconnection of a dial: first interval and cap of its exponential back-off, ms. */
  reconnectMin: number
  reconnectMax: number
  /** ZMTP heartbeats, run by libzmq's I/O thread even while JavaScript is busy: a PING every `heartbeatInterval` ms. */
  heartbeatInterval: number
  /** Close a connection that has sent nothing for this long after a PING, ms. */
  heartbeatTimeout: number
  /** Asks the other side to close the connection after this long without traffic from us, ms. */
  heartbeatTimeToLive: number
  /** A connection that has not completed the ZMTP handshake by then is closed, ms. */
  handshakeInterval: number
  /** Messages libzmq queues per connection to the peer. */
  sendQueue: number
  /** CURVE keys (Z85) of an encrypted node; absent for plaintext. */
  curve?: { publicKey: string; secretKey: string }
  /** The context every socket of the node is made in (shared with a few other nodes of the process). */
  context: SocketContext
}

/** A failed ZMTP handshake or connection attempt, as the layer above reports it. */
export type HandshakeFailure = {
  /** `AUTH`: the ZAP handler refused the key. `OVERLOADED`: it refused the connection for a limit. `HANDSHAKE`: anything else. */
  code: 'AUTH' | 'OVERLOADED' | 'HANDSHAKE'
  /** What happened, in words a user can act on. */
  why: string
  address: string
}

/**
 * A libzmq context, with its ZAP handler, that a few nodes' sockets share:
 * up to {@link MAX_CONTEXTS} a process, each node in the one that holds the
 * fewest. libzmq tears a closed socket down in its context's reaper thread,
 * and each socket's teardown walks every inproc endpoint of the context
 * (ctx.cpp, unregister_endpoints), one per socket monitor, so every dial
 * added one while each dial had a DEALER and a monitor of its own (now each
 * dialling socket adds one, see DialSockets). With twenty nodes' dials in one context, closing them all kept the
 * reaper busy long enough for a ZMTP heartbeat to fall due on a connection
 * still being torn down whose peer had just reset it, and libzmq 4.3.5 then
 * aborts the process (the assertion !_io_error in stream_engine_base.cpp,
 * libzmq issue 4841): in 6 of 22 mass closes of 100 members in 6 processes.
 * Four contexts cut that walk to a sixteenth, in four reapers: no abort in
 * 20 such closes.
 *
 * Not one per node, though that avoided the abort as well (0 of 20): a
 * context costs about 280 KiB and two threads whatever it holds, and libzmq
 * keeps a context's I/O thread until the process exits, so contexts are
 * never closed and their number must stay bounded. The price is CPU at rest
 * in a process of many nodes: in three interleaved runs of 100 members in 5
 * processes, a member cost 10-24 % more with four contexts than with one
 * (one per node: 14 %), with no change in the time to converge.
 */
export class SocketContext {
  readonly zmq: zmq.Context
  readonly zap: ZapServer
  /** Nodes open in it. */
  private nodes = 0

  private constructor(maxSockets: number) {
    this.zmq = new zmq.Context({ maxSockets })
    this.zap = new ZapServer(this.zmq)
  }

  /** The context for a new node: a new one while there are fewer than {@link MAX_CONTEXTS} and each holds a node, else the emptiest. */
  static take(): SocketContext {
    let c = contexts.reduce<SocketContext | undefined>((best, x) => (best === undefined || x.nodes < best.nodes ? x : best), undefined)
    if (c === undefined || (c.nodes > 0 && contexts.length < MAX_CONTEXTS)) {
      c = new SocketContext(socketsFor(readLimit()))
      contexts.push(c)
    }
    c.nodes++
    return c
  }

  /** The contexts of this process and the nodes open in each (for tests). */
  static census(): number[] {
    return contexts.map((c) => c.nodes)
  }

  /** Its node is closed. */
  release(): void {
    this.nodes--
  }
}

/** Contexts a process makes at most. */
export const MAX_CONTEXTS = 4
const contexts: SocketContext[] = []

/**
 * The sockets a process may need: every libzmq socket holds at least one
 * file descriptor (its mailbox), so the process's limit bounds them, and the
 * descriptor budget (fds.ts) refuses a dial before the context is full; at
 * most 65,536. A dial holds no socket of its own (DialSockets), but a dial
 * to a host name, or a second one to an address, takes a dialling socket
 * (three sockets with its monitor's pair), and when each dial had a DEALER
 * and monitor, libzmq's default cap, 1023 a context, stopped a process at
 * about 340 dials. A context costs 12 bytes of memory a socket it may hold
 * (about 280 KiB for this machine's limit of 20,000 descriptors), allocated
 * at once.
 */
export const socketsFor = (fdLimit: number | undefined): number => Math.min(65_536, fdLimit === undefined ? 65_536 : fdLimit + 64)

// --- ZAP ---------------------------------------------------------------------

/** What a ZAP request tells about a connecting socket (RFC 27). */
export interface ZapRequest {
  /** The peer's IP address, without the port. */
  address: string
  mechanism: string
  /** The client's CURVE public key, 32 bytes (CURVE only). */
  key?: Uint8Array
}

/**
 * How one node's handshakes are decided, one request at a time, in order.
 * Before each, `before` may make it wait (undefined: decide at once), so the
 * node can tell which of the connections that then appear it admitted.
 */
export interface ZapPolicy {
  before(request: ZapRequest): Promise<void> | undefined
  /** The ZAP status: `ADMIT`, `REFUSE_KEY` (400: the key is refused), or `BUSY` (refused for now, a limit). */
  decide(request: ZapRequest): ZapStatus
}

/**
 * ZAP status codes (RFC 27). libzmq sends a refusal's code to the client in
 * an ERROR command, so a dialler can tell a refused key (400) from a full
 * listener. A full listener answers 500: 300, the code meant for a temporary
 * failure, makes libzmq drop the client silently, which it could not tell
 * from a peer that is not ZeroMQ at all.
 */
export const ZapStatus = { ADMIT: 200, BUSY: 500, REFUSE_KEY: 400 } as const
export type ZapStatus = (typeof ZapStatus)[keyof typeof ZapStatus]

interface Domain {
  policy: ZapPolicy
  queue: { reply: (status: ZapStatus) => void; request: ZapRequest }[]
  busy: boolean
}

/** A handler socket's replies waiting to be sent: zeromq.js allows one send at a time per socket, and a reply may have to wait for room. */
interface Outbox {
  replies: (string | Buffer)[][]
  sending: boolean
}

/** Domains given out, by every context's handler: each name is new in the process. */
let domainsGiven = 0

/**
 * The ZAP handler of one context. libzmq asks it during every handshake on
 * a ROUTER that has a ZAP domain; each ROUTER has a domain of its own, and
 * its requests are decided one at a time, in order, by its node. A domain
 * nobody holds is refused: the handler fails closed.
 */
class ZapServer {
  private socket: zmq.Router | undefined
  private ready: Promise<void> = Promise.resolve()
  private readonly domains = new Map<string, Domain>()

  constructor(private readonly context: zmq.Context) {}

  /** Hold a fresh domain decided by `policy`; `ready` resolves once the handler is bound. */
  register(policy: ZapPolicy): { domain: string; ready: Promise<void>; release(): void } {
    const domain = `bilateral/${process.pid}/${domainsGiven++}`
    if (this.socket === undefined) {
      // Made before the domain is held: a socket that cannot be made (EMFILE) leaves nothing behind.
      const socket = new zmq.Router({ context: this.context, linger: 0 })
      this.socket = socket
      // Never bound: the next domain asked for tries a fresh socket, instead of every later one failing on this one.
      this.ready = bindWhenFree(socket).catch((error: unknown) => {
        if (this.socket === socket) this.close()
        throw error
      })
      void this.loop(socket, { replies: [], sending: false })
    }
    this.domains.set(domain, { policy, queue: [], busy: false })
    return {
      domain,
      ready: this.ready,
      release: () => {
        this.domains.delete(domain)
        if (this.domains.size === 0) this.close()
      },
    }
  }

  private close(): void {
    this.socket?.close()
    this.socket = undefined
  }

  /** Was `domain` one of ours (given out in this process, and since released)? */
  private wasOurs(domain: string): boolean {
    const prefix = `bilateral/${process.pid}/`
    if (!domain.startsWith(prefix)) return false
    const n = Number(domain.slice(prefix.length))
    return Number.isInteger(n) && n >= 0 && n < domainsGiven
  }

  private send(socket: zmq.Router, out: Outbox, reply: (string | Buffer)[]): void {
    out.replies.push(reply)
    if (!out.sending) void this.drain(socket, out)
  }

  private async drain(socket: zmq.Router, out: Outbox): Promise<void> {
    out.sending = true
    try {
      for (let reply = out.replies.shift(); reply !== undefined; reply = out.replies.shift()) {
        if (this.socket !== socket) break
        await socket.send(reply).catch(() => undefined)
      }
    } finally {
      out.sending = false
      if (this.socket !== socket) out.replies = []
    }
  }

  private async loop(socket: zmq.Router, out: Outbox): Promise<void> {
    try {
      await this.ready
      for (;;) {
        const [routingId, empty, version, requestId, domainName, address, , mechanism, key] = await socket.receive()
        const reply = (status: ZapStatus): void => {
          const text = status === ZapStatus.ADMIT ? 'OK' : status === ZapStatus.BUSY ? 'busy' : 'refused'
          const answer = [routingId!, empty!, '1.0', requestId!, String(status), text, '', '']
          if (this.socket === socket) this.send(socket, out, answer)
        }
        const name = domainName?.toString() ?? ''
        const domain = this.domains.get(name)
        if (domain === undefined || version?.toString() !== '1.0') {
          // A domain of ours released (its node closed, its ROUTER not gone yet): for now. Any other: refused.
          reply(version?.toString() === '1.0' && this.wasOurs(name) ? ZapStatus.BUSY : ZapStatus.REFUSE_KEY)
          continue
        }
        const m = mechanism?.toString() ?? ''
        domain.queue.push({ reply, request: { address: address?.toString() ?? '', mechanism: m, key: m === 'CURVE' ? key : undefined } })
        void this.pump(domain)
      }
    } catch {
      // Closed, or the endpoint is taken: handshakes then fail closed in libzmq.
    }
  }

  /** Decide `domain`'s requests one after the other. */
  private async pump(domain: Domain): Promise<void> {
    if (domain.busy) return
    domain.busy = true
    try {
      for (let item = domain.queue.shift(); item !== undefined; item = domain.queue.shift()) {
        const wait = domain.policy.before(item.request)
        if (wait !== undefined) await wait
        let status: ZapStatus = ZapStatus.REFUSE_KEY
        try {
          status = domain.policy.decide(item.request)
        } catch {
          status = ZapStatus.REFUSE_KEY
        }
        item.reply(status)
      }
    } finally {
      domain.busy = false
    }
  }
}

/**
 * Bind the ZAP endpoint. A handler just closed (its last node closed) frees
 * it a moment later, in libzmq's reaper thread: until then, retry.
 */
async function bindWhenFree(socket: zmq.Router): Promise<void> {
  for (let tries = 0; ; tries++) {
    try {
      socket.bindSync(ZAP_ENDPOINT)
      return
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EADDRINUSE' || tries >= 200) throw error
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
}

// --- ROUTER ------------------------------------------------------------------

export interface RouterEvents {
  /** A connection completed its handshake (libzmq's connect notification). */
  connect(routingId: Buffer): void
  /** A message from a connection. */
  message(routingId: Buffer, parts: Buffer[]): void
  /** A connection closed; everything it sent came before. */
  disconnect(routingId: Buffer): void
  /** A handshake on this socket failed. */
  handshakeFailed(failure: HandshakeFailure): void
  /** Handling one message threw, or the receive loop failed. */
  failed(error: unknown): void
}

/** What became of a message sent to one routing id: queued, refused for a full queue, or refused because no such connection exists. */
export type Delivery = 'sent' | 'full' | 'gone'

/** The ROUTER socket peers dial into. Created on the first `bind()`; every handshake on it goes through `decide` (ZAP). */
export class RouterPort {
  private socket: zmq.Router | undefined
  private closed = false
  private zap: { domain: string; ready: Promise<void>; release(): void } | undefined
  /** TCP connections libzmq holds, handshaking or not, by its monitor (accepted minus disconnected). */
  tcpConnections = 0

  constructor(
    private readonly settings: SocketSettings,
    private readonly policy: ZapPolicy,
    private readonly events: RouterEvents,
  ) {}

  /**
   * Bind to `address`; resolves to the bound endpoint (with the port the
   * system chose for `*`). The bind itself is synchronous: zeromq.js's async
   * bind blocks the whole socket (EBUSY) while a worker thread binds, and a
   * receive or send in that window failed.
   */
  async bind(address: string): Promise<string> {
    // Closed meanwhile (close() raced a listen): bind nothing, and hold no ZAP domain nobody would release.
    if (this.closed) throw new Error('the node is closed')
    const zap = (this.zap ??= this.settings.context.zap.register(this.policy))
    try {
      await zap.ready
    } catch (error) {
      // The handler could not bind: give the domain back (once, however many binds waited), so a later listen() asks afresh.
      if (this.zap === zap) {
        zap.release()
        this.zap = undefined
      }
      throw error
    }
    if (this.closed) throw new Error('the node is closed')
    const socket = this.open()
    socket.bindSync(address)
    return socket.lastEndpoint ?? address
  }

  /** Send to the peer behind `routingId`: 'gone' once libzmq has closed that connection (ROUTER_MANDATORY), 'full' if its queue is. */
  deliver(routingId: Buffer, parts: Uint8Array[]): Promise<Delivery> {
    const socket = this.socket
    if (socket === undefined || this.closed) return Promise.resolve('gone')
    return sendTo(socket, routingId, parts)
  }

  /**
   * Close. The connections in `awaited` were just sent a PART: the socket
   * stays open until each has closed (its peer read the PART and hung up),
   * or sent a message that `leaving` says is its own farewell (a peer
   * closing too will not read ours), or `linger` ms have passed, reading
   * and dropping what still comes, and then closes with linger 0. It never closes with a linger: libzmq would
   * then keep each connection open to flush it with its input stopped, and
   * one that receives data and is then reset by its peer makes the next
   * ZMTP heartbeat abort the process (the assertion !_io_error in
   * stream_engine_base.cpp; a peer that stops reading does it at will).
   *
   * Not unbind() first: libzmq's unbind also tears down the accepted
   * connections, and racing that with close aborted the process (an
   * assertion in libzmq's pipe.cpp). The ZAP domain goes last: a handshake
   * in flight is refused (the node is closed), not admitted.
   */
  async close(awaited: readonly Buffer[] = [], leaving: (parts: Buffer[]) => boolean = () => false): Promise<void> {
    if (this.closed) return
    this.closed = true
    const socket = this.socket
    if (socket !== undefined && awaited.length > 0 && this.settings.linger > 0) {
      const left = new Set(awaited.map((id) => id.toString('latin1')))
      let timer: ReturnType<typeof setTimeout> | undefined
      await new Promise<void>((resolve) => {
        this.closing = (routingId, parts) => {
          if ((isGone(parts) || leaving(parts)) && left.delete(routingId.toString('latin1')) && left.size === 0) resolve()
        }
        timer = setTimeout(resolve, this.settings.linger)
      })
      clearTimeout(timer)
      this.closing = undefined
    }
    if (socket !== undefined) {
      socket.linger = 0
      socket.close()
    }
    this.zap?.release()
  }

  /** While close() waits: told of each message (a closed connection's GONE included). */
  private closing: ((routingId: Buffer, parts: Buffer[]) => void) | undefined

  private open(): zmq.Router {
    if (this.socket !== undefined) return this.socket
    const s = this.settings
    const socket = interruptible(() => {
      const socket = new zmq.Router({
        ...(s.curve === undefined ? {} : { curveServer: true, curveSecretKey: s.curve.secretKey, curvePublicKey: s.curve.publicKey }),
        zapDomain: this.zap!.domain,
        // Should the handler be gone (its context's last domain released), libzmq refuses handshakes instead of admitting them all.
        zapEnforceDomain: true,
        mandatory: true,
        ...common(s),
        // Until close(): an accepted connection that drops lets us read all it delivered, however busy we are (see close()).
        linger: -1,
      })
      try {
        const raw = socket as unknown as RawOptions
        raw.setInt32Option(ZMQ_ROUTER_NOTIFY, ZMQ_NOTIFY_CONNECT)
        raw.setStringOption(ZMQ_DISCONNECT_MSG, GONE)
        watchHandshakes(socket, undefined, (failure) => {
          // A connection we refused for a limit was reported when it was refused (connection:refused).
          if (!this.closed && failure.code !== 'OVERLOADED') this.events.handshakeFailed(failure)
        })
        socket.events.on('accept', () => this.tcpConnections++)
        socket.events.on('disconnect', () => this.tcpConnections--)
      } catch (error) {
        socket.close()
        throw error
      }
      return socket
    })
    this.socket = socket
    void this.loop(socket)
    return socket
  }

  private async loop(socket: zmq.Router): Promise<void> {
    const events = this.events
    try {
      // receive() itself, not the async iterator, which adds a promise and an async call per message.
      for (;;) {
        const parts = await socket.receive()
        const routingId = parts.shift()
        if (routingId !== undefined && this.closing !== undefined) this.closing(routingId, parts)
        if (routingId === undefined || this.closed) continue
        // One bad message (or a throwing event listener above us) must not end the loop.
        try {
          if (parts.length === 1 && parts[0]!.length <= 1) {
            if (parts[0]!.length === 0) events.connect(routingId)
            else if (parts[0]![0] === GONE[0]) events.disconnect(routingId)
            else events.message(routingId, parts)
          } else events.message(routingId, parts)
        } catch (error) {
          try {
            events.failed(error)
          } catch {
            // What reports the failure threw as well (a listener of the node's): the loop goes on all the same.
          }
        }
      }
    } catch (error) {
      if (!this.closed) events.failed(error)
    }
  }
}

// --- dialling ----------------------------------------------------------------

export interface DialEvents {
  /** A message from the peer. */
  message(parts: Buffer[]): void
  /** The connection completed its handshake. */
  connected(): void
  /** The connection dropped; everything it sent came before, and what follows comes on the next one (libzmq reconnects by itself). */
  dropped(): void
  /** A connection attempt failed (refused, unreachable); libzmq tries again after its back-off. */
  unreachable(why: string): void
  /** The handshake failed: libzmq gives up on this dial, only a new one will try again. */
  failed(failure: HandshakeFailure): void
  /** Handling one message threw, or the receive loop failed. */
  error(error: unknown): void
}

/**
 * Addresses a dialling socket may have let go before it takes no new dial
 * (and closes once its last dial has ended). An address let go never goes
 * back to the socket it was dialled from: the monitor names a dial only by
 * its address, and its events come through a queue JavaScript reads when it
 * can, however late, so one about the dial that ended (its handshake, a
 * failure) would otherwise be taken for the next dial to that address.
 */
const MAX_LET_GO = 256

/**
 * The sockets a node dials from: one ROUTER, on which each dialled address is
 * one `connect()` with a routing id of its own, so a dial costs a TCP
 * connection and a pipe, not a socket with a mailbox and a monitor of its
 * own. Against a DEALER and monitor a dial, in raw zeromq.js with 1,000
 * connections in one process, a connection took 0.33 ms of CPU instead of
 * 0.42, 62 KiB instead of 87, and 2 descriptors instead of 5 (both ends).
 *
 * The ROUTER sets ROUTER_NOTIFY to disconnections only: a dial's connection
 * that drops arrives as an empty message after everything it delivered, in
 * order with the data, as the DEALER's hiccup did. Not connections as well:
 * libzmq sends both as the same empty message, and sends the disconnection
 * for a connection whose handshake failed after the greeting, so the two
 * could not be told apart. A completed handshake comes from the socket
 * monitor instead, by address, counted against the drops, as before. A
 * second dial to an address this ROUTER dials already (a seed's dial by
 * address beside the member's own), or has dialled and let go (MAX_LET_GO),
 * goes to another ROUTER, made for it and closed when its last dial ends:
 * the monitor could not tell the two apart. So does a dial to an address the
 * monitor does not always name as given (a host name: see namesItself).
 *
 * On an encrypted node, the peer's public key (CURVE_SERVERKEY) is set just
 * before each connect(), which copies the socket's options into the dial's
 * session.
 */
export class DialSockets {
  private readonly lanes: Lane[] = []
  private closed = false
  private dials = 0

  /** `room(fds)`: may a new dial take that many more descriptors (fds.ts)? */
  constructor(
    private readonly settings: SocketSettings,
    private readonly room: (fds: number) => boolean,
  ) {}

  /**
   * Dial `address`; on an encrypted node, `serverKey` is the peer's public key
   * and the CURVE handshake proves the peer holds its secret.
   *
   * libzmq reconnects a dropped or refused connection by itself, with its
   * exponential back-off (`reconnectMin` doubling to `reconnectMax`). It does
   * not retry a failed handshake (RECONNECT_STOP: it would reset its interval
   * after every TCP connect and retry every `reconnectMin` for ever): the
   * dialler dials again after its own back-off. Nothing else stops its
   * reconnecting: a stopped reconnection ends the dial's session and with it
   * its pipe, discarding what a dropped connection delivered and JavaScript
   * had not yet read, the drop's notice included.
   *
   * Not `immediate`: libzmq attaches the dial's pipe at once, so what is sent
   * before the connection is up queues for it (the JOIN); with `immediate` it
   * would also drop messages received but not yet read when a connection
   * closes.
   *
   * Throws if the dial cannot be made (a bad address, no socket to be had);
   * nothing is left open then.
   */
  open(address: string, serverKey: string | undefined, events: DialEvents): Dial {
    if (this.closed) throw new Error('the node is closed')
    if (this.settings.curve !== undefined && serverKey === undefined) throw new Error('an encrypted node dials a key')
    const shared = namesItself(address)
    let lane = shared ? this.lanes.find((l) => l.takes(address)) : undefined
    // The dial's descriptor, and a new socket's if it needs one: one check of the budget.
    if (!this.room(FDS_PER_DIAL + (lane === undefined ? FDS_PER_DIAL_SOCKET : 0))) throw new NoRoom()
    if (lane === undefined) {
      lane = new Lane(this.settings, shared, (l) => this.emptied(l))
      this.lanes.push(lane)
    }
    try {
      return lane.dial(address, serverKey, `${(this.dials++).toString(36)}`, events)
    } catch (error) {
      this.emptied(lane)
      throw error
    }
  }

  /** The node is closed: each socket closes once its last dial has (at once if it has none). */
  close(): void {
    this.closed = true
    for (const lane of [...this.lanes]) this.emptied(lane)
  }

  /** Dialling sockets open now (for tests). */
  get sockets(): number {
    return this.lanes.length
  }

  /** A socket's last dial ended: it closes (a node that dials no one holds no socket, and lets the process exit). */
  private emptied(lane: Lane): void {
    const at = this.lanes.indexOf(lane)
    if (!lane.idle || at < 0) return
    this.lanes.splice(at, 1)
    lane.close()
  }
}

/**
 * Is `address` one the monitor names as it was given, always: TCP to an IPv4
 * address written as libzmq writes it. libzmq names a dial's first
 * connection's events by the address given to connect(), but its later
 * ones by the address it resolved (`tcp://localhost:7000` becomes
 * `tcp://127.0.0.1:7000` once the first connection has dropped), so a dial
 * to any other address (a host name, IPv6, another transport) gets a
 * dialling socket of its own, whose events are all that dial's.
 */
function namesItself(address: string): boolean {
  const m = /^tcp:\/\/([0-9.]+):([1-9][0-9]{0,4})$/.exec(address)
  return m !== null && isIPv4(m[1]!) && Number(m[2]) <= 65_535
}

/** Descriptors a dialling socket takes beside its dials': its mailbox and its monitor's pair. */
const FDS_PER_DIAL_SOCKET = 3

/** A dial refused by the descriptor budget (fds.ts): too few descriptors are left for it. */
export class NoRoom extends Error {
  constructor() {
    super('too few file descriptors left')
  }
}

/** One ROUTER of a node's dials: `shared` by dials to addresses that name themselves (namesItself), or one dial's alone. */
class Lane {
  private readonly socket: zmq.Router
  /** Dials by routing id (latin1). */
  private readonly byId = new Map<string, Dial>()
  /** Dials by address, as the monitor names them. */
  private readonly byAddress = new Map<string, Dial>()
  /** Addresses let go (see MAX_LET_GO). */
  private readonly letGo = new Set<string>()
  private closed = false

  constructor(
    private readonly settings: SocketSettings,
    private readonly shared: boolean,
    private readonly emptied: (lane: Lane) => void,
  ) {
    const s = settings
    this.socket = interruptible(() => {
      const socket = new zmq.Router({
        ...(s.curve === undefined ? {} : { curvePublicKey: s.curve.publicKey, curveSecretKey: s.curve.secretKey }),
        reconnectInterval: s.reconnectMin,
        reconnectMaxInterval: s.reconnectMax,
        mandatory: true,
        ...common(s),
        // A dial's session ends only when we let it go or its handshake failed: nothing of it is wanted then.
        linger: 0,
      })
      try {
        const raw = socket as unknown as RawOptions
        raw.setInt32Option(ZMQ_ROUTER_NOTIFY, ZMQ_NOTIFY_DISCONNECT)
        raw.setInt32Option(ZMQ_RECONNECT_STOP, ZMQ_RECONNECT_STOP_HANDSHAKE_FAILED)
        // A throw out of a listener would end zeromq.js's monitor loop for every dial on the socket.
        const tell = (address: string, what: (dial: Dial) => void): void => {
          const dial = this.named(address)
          if (dial !== undefined) guarded(dial, () => what(dial))
        }
        socket.events.on('handshake', (e) => tell(e.address, (dial) => dial.handshake()))
        watchHandshakes(socket, s.curve === undefined ? 'plaintext' : 'encrypted', (failure) =>
          tell(failure.address, (dial) => dial.fail(failure)),
        )
        // No connection yet, or none since the last dropped: libzmq tries again after its back-off.
        socket.events.on('connect:retry', (e) => tell(e.address, (dial) => dial.unreachable()))
      } catch (error) {
        socket.close()
        throw error
      }
      return socket
    })
    void this.loop()
  }

  /** The dial a monitor event names: by its address on a shared socket; on a socket of one dial's, that dial whatever the name. */
  private named(address: string): Dial | undefined {
    if (this.shared) return this.byAddress.get(address)
    for (const dial of this.byId.values()) return dial
    return undefined
  }

  /** Can it dial `address` now: shared, open, not dialling it, never having let it go, and not full of addresses let go? */
  takes(address: string): boolean {
    return this.shared && !this.closed && !this.byAddress.has(address) && !this.letGo.has(address) && this.letGo.size < MAX_LET_GO
  }

  get idle(): boolean {
    return this.byId.size === 0
  }

  dial(address: string, serverKey: string | undefined, id: string, events: DialEvents): Dial {
    const socket = this.socket
    // zeromq.js warns (process.emitWarning) of every option set on a socket with endpoints, though these two are read at connect().
    quietly(() => {
      if (serverKey !== undefined) socket.curveServerKey = serverKey
      interruptible(() => socket.connect(address, { routingId: id }))
    })
    const dial = new Dial(address, Buffer.from(id, 'latin1'), this, events, this.settings.linger)
    this.byId.set(id, dial)
    this.byAddress.set(address, dial)
    return dial
  }

  send(routingId: Buffer, parts: Uint8Array[]): Promise<Delivery> {
    return sendTo(this.socket, routingId, parts)
  }

  /** Let `dial` go: its session ends now, and nothing queued for it is sent. */
  end(dial: Dial): void {
    const id = dial.routingId.toString('latin1')
    if (this.byId.get(id) !== dial) return
    this.byId.delete(id)
    if (this.byAddress.get(dial.address) === dial) this.byAddress.delete(dial.address)
    if (this.shared) this.letGo.add(dial.address)
    try {
      interruptible(() => this.socket.disconnect(dial.address))
    } catch {
      // Its session ended already (a failed handshake stops it): nothing to let go.
    }
    this.emptied(this)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.socket.close()
  }

  private async loop(): Promise<void> {
    const socket = this.socket
    try {
      // receive() itself, not the async iterator, which adds a promise and an async call per message.
      for (;;) {
        const parts = await socket.receive()
        const dial = this.byId.get(parts.shift()!.toString('latin1'))
        // A dial let go: what its session still delivered is dropped. Nothing one dial's handlers throw ends the loop.
        if (dial !== undefined) guarded(dial, () => dial.receive(parts))
      }
    } catch (error) {
      if (this.closed) return
      // The socket failed: every dial on it is told, and it takes no more (each dialler dials again on a fresh one).
      this.closed = true
      for (const dial of [...this.byId.values()]) guarded(dial, () => dial.events.error(error))
    }
  }
}

/** One dialled address, on one of the node's dialling sockets. */
export class Dial {
  private closed = false
  /** Handshakes completed (the monitor says) and connections dropped (in order with the data): they race, so each is counted. */
  private handshakes = 0
  private drops = 0

  constructor(
    readonly address: string,
    readonly routingId: Buffer,
    private readonly lane: Lane,
    readonly events: DialEvents,
    private readonly linger: number,
  ) {}

  /** Whether a connection has completed its ZeroMQ handshake and not dropped since. */
  get connected(): boolean {
    return this.handshakes > this.drops
  }

  /** Queue `parts` as one message: 'full' if the queue is, 'gone' once the dial is let go or its handshake failed. */
  send(parts: Uint8Array[]): Promise<Delivery> {
    if (this.closed) return Promise.resolve('gone')
    return this.lane.send(this.routingId, parts)
  }

  /**
   * Close. With `deliver`, for a PART just sent, the dial stays for the
   * node's linger, reading and dropping what comes, or until a message
   * that `leaving` says is the peer's own farewell (closing too, it will not
   * read ours), and is then let go; without it, it is let go at once and
   * nothing queued is delivered. Never with a linger, which lets a peer
   * abort the process (see RouterPort.close()).
   */
  close(deliver = false, leaving: (parts: Buffer[]) => boolean = () => false): void {
    if (this.closed) return
    this.closed = true
    if (!deliver || this.linger === 0) return this.lane.end(this)
    const timer = setTimeout(() => this.shut(), this.linger)
    this.closing = (parts) => {
      // The peer's own farewell, or its hanging up (it read our PART): nothing more to wait for.
      if (!leaving(parts) && !isDropNotice(parts)) return
      clearTimeout(timer)
      this.shut()
    }
  }

  /** While close() keeps the dial: told of each message. */
  private closing: ((parts: Buffer[]) => void) | undefined

  private shut(): void {
    this.closing = undefined
    this.lane.end(this)
  }

  /** A message for this dial, from the socket's receive loop (which catches what its handlers throw). */
  receive(parts: Buffer[]): void {
    // Closing (see close()): what still comes is read and dropped, until the dial is let go.
    if (this.closed) return this.closing?.(parts)
    if (isDropNotice(parts)) {
      this.drops++
      this.events.dropped()
    } else this.events.message(parts)
  }

  handshake(): void {
    this.handshakes++
    if (!this.closed) this.events.connected()
  }

  fail(failure: HandshakeFailure): void {
    if (!this.closed) this.events.failed(failure)
  }

  unreachable(): void {
    if (!this.closed) this.events.unreachable('no connection')
  }
}

// --- shared ------------------------------------------------------------------

/** Most times a call interrupted by a signal is made again: each try is a fresh chance, so a few always do. */
const INTERRUPTED_TRIES = 100

/**
 * Run `f`, again if a signal (a child process's SIGCHLD, a profiler's
 * SIGPROF) interrupted a system call in it with EINTR: making a socket or
 * its monitor, or a connect or disconnect, which libzmq fails so when the
 * signal comes as they first read the socket's mailbox, before they do
 * anything (zeromq.js tries bind, unbind, send and receive again itself,
 * not these). What `f` made before it threw, it closes.
 */
function interruptible<T>(f: () => T): T {
  for (let tries = 1; ; tries++) {
    try {
      return f()
    } catch (error) {
      if ((error as { code?: unknown } | undefined)?.code !== 'EINTR' || tries >= INTERRUPTED_TRIES) throw error
    }
  }
}

/** Run `what` for `dial`; what it throws goes to the dial's error handler, and what that throws is dropped: one dial's handlers cannot stop a socket's loops. */
function guarded(dial: Dial, what: () => void): void {
  try {
    what()
  } catch (error) {
    try {
      dial.events.error(error)
    } catch {
      // Its error handler threw as well (a listener of the node's): reported as far as it can be.
    }
  }
}

/**
 * Set options on a socket that has endpoints without zeromq.js's warning,
 * which it emits (process.emitWarning) for any such option, though libzmq
 * reads a connect()'s options at that connect().
 */
function quietly(set: () => void): void {
  const warn = process.emitWarning
  process.emitWarning = (() => {}) as typeof process.emitWarning
  try {
    set()
  } finally {
    process.emitWarning = warn
  }
}

/** zeromq.js's option setters for options it has no property for (protected in its types). */
interface RawOptions {
  setInt32Option(option: number, value: number): void
  setStringOption(option: number, value: string | Buffer | null): void
}

/** What every socket of ours sets: its node's context, sends that never wait, the queues, limits and heartbeats. */
function common(s: SocketSettings): Partial<zmq.Router> & { context: zmq.Context } {
  return {
    context: s.context.zmq,
    sendTimeout: 0,
    // No limit on what libzmq queues from a peer. A connection whose queue is full stops being read,
    // and libzmq 4.3.5 then aborts the process when that peer resets the connection while a heartbeat is
    // due (the assertion !_io_error in stream_engine_base.cpp; libzmq issues 3937, 4364, 4767; reproduced
    // here): a bounded queue would let any peer kill the node. A peer of this release keeps within the
    // window it was given (link.ts); what another can make libzmq hold, it could anyway, one message of
    // many parts at a time (PROTOCOL.md 2.4).
    receiveHighWaterMark: 0,
    sendHighWaterMark: s.sendQueue,
    linger: s.linger,
    maxMessageSize: s.maxMessageSize,
    handshakeInterval: s.handshakeInterval,
    heartbeatInterval: s.heartbeatInterval,
    heartbeatTimeout: s.heartbeatTimeout,
    heartbeatTimeToLive: s.heartbeatTimeToLive,
  }
}

/**
 * What a failed handshake means, from the monitor's event: said as a user
 * would need to hear it. `dial`: whether this side dials encrypted, for a
 * dialling socket (a listening ROUTER's failures are its peers').
 */
function watchHandshakes(
  socket: zmq.Socket,
  dial: 'encrypted' | 'plaintext' | undefined,
  report: (failure: HandshakeFailure) => void,
): void {
  socket.events.on('handshake:error:auth', (e) =>
    report(
      (e.error as { status?: number }).status === ZapStatus.BUSY
        ? {
            code: 'OVERLOADED',
            why: 'the listener refused the connection for now (a connection limit, too few file descriptors, or it is closing)',
            address: e.address,
          }
        : { code: 'AUTH', why: 'the key was refused', address: e.address },
    ),
  )
  socket.events.on('handshake:error:protocol', (e) => {
    const code = (e.error as { code?: string }).code ?? ''
    const why =
      code === 'ERR_ZMTP_MECHANISM_MISMATCH'
        ? 'one side is encrypted and the other is not'
        : `the ZeroMQ handshake failed (${code || e.error.message}): is it a bilateral node of this network?`
    report({ code: 'HANDSHAKE', why, address: e.address })
  })
  socket.events.on('handshake:error:other', (e) =>
    report({
      code: 'HANDSHAKE',
      why: `the peer closed the connection during the handshake (${(e.error as { code?: string }).code ?? e.error.message}): ${
        dial === 'encrypted'
          ? 'not a ZeroMQ endpoint, or it does not hold the key dialled'
          : dial === 'plaintext'
            ? 'not a ZeroMQ endpoint, or an encrypted one (one side is encrypted and the other is not)'
            : 'not a ZeroMQ endpoint, or it is not on this node’s encryption'
      }`,
      address: e.address,
    }),
  )
}

const sent = (): Delivery => 'sent'
/** Send `parts` to the connection behind `routingId` on a ROUTER (ROUTER_MANDATORY). */
function sendTo(socket: zmq.Router, routingId: Buffer, parts: Uint8Array[]): Promise<Delivery> {
  try {
    return socket.send([routingId, ...parts]).then(sent, delivery)
  } catch (error) {
    return Promise.resolve(delivery(error))
  }
}

/** EHOSTUNREACH means the connection is gone; anything else (a full queue, EAGAIN) is 'full'. */
const delivery = (error: unknown): Delivery => ((error as { code?: unknown } | undefined)?.code === 'EHOSTUNREACH' ? 'gone' : 'full')
