/**
 * The public node: listen, connect, register receivers, call and cast. It
 * wires the call layer (calls we make, calls we serve) to the mesh (links
 * and peers); neither knows the other.
 */
import { EventEmitter } from 'node:events'
import { systemClock, type Clock } from './clock.js'
import { OutgoingCalls, abortMessage } from './calls/outgoing.js'
import { IncomingCalls, encodeWithin } from './calls/incoming.js'
import { Registry, toPredicate, type RegisterOptions } from './calls/registry.js'
import { Context, type CallContext, type CallOptions, type Caller, type CastOptions } from './calls/context.js'
import { checkMetaShape, encodeMeta, pick, type Meta } from './calls/meta.js'
import { policyFor } from './calls/policy.js'
import { Collector, Single, type CallResult, type CallSink } from './calls/results.js'
import { CallStream } from './calls/stream.js'
import { makeService, type Implementation, type Multicast, type ServiceHost, type ServiceOptions, type Unicast } from './calls/contract.js'
import { BilateralError, clip, type ErrorCode } from './errors.js'
import { describeValue, unknownOption } from './misuse.js'
import type { Logger, LogLevel } from './log.js'
import { Metrics, type MetricsSnapshot } from './observe/metrics.js'
import { Membership, type MemberInfo, type MemberSelector, type MembershipCounts } from './membership/membership.js'
import { parseSeed, systemResolver } from './membership/seeds.js'
import {
  Chain,
  report,
  type InboundCall,
  type InboundEnd,
  type Interceptor,
  type OutboundCall,
  type OutboundResult,
} from './observe/interceptors.js'
import { DEFAULT_INTROSPECTION, introspection, type Introspected } from './introspection.js'
import {
  checkFreshProof,
  checkJoinProof,
  derivePublicKey,
  isZ85Key,
  makeFreshProof,
  makeJoinProof,
  randomBytes,
  sodiumPending,
} from './crypto.js'
import { z85Encode } from './z85.js'
import type { Link } from './mesh/link.js'
import { Mesh, type DownReason, type Identity, type MeshStats } from './mesh/mesh.js'
import {
  checkName,
  checkJoinOptions,
  checkSeeds,
  checkTimeout,
  isEndpoint,
  isKey,
  resolveOptions,
  type BilateralOptions,
  type JoinMeshOptions,
  type ResolvedOptions,
} from './options.js'
import { Codec } from './wire/codec.js'
import { FrameType, MAX_METHOD_BYTES, NONCE_BYTES, encodeCall, encodeCast, type DataFrame } from './wire/frames.js'

export interface WaitOptions {
  /** How long to wait, ms (1 to 2147483647). Default: the node's `callTimeout` (2000). */
  timeout?: number
}

/** Events a node emits, with their listeners' arguments. */
export interface BilateralEvents {
  /** A peer became active (after JOIN/STAY, in either direction). */
  'peer:up': [name: string]
  /** An active peer went down. */
  'peer:down': [name: string, reason: DownReason]
  /** A join was refused, by us or by the peer; the error's `code` says why. */
  'peer:refused': [name: string, error: BilateralError]
  /** A cast's handler threw or rejected (there is no caller to tell). */
  'cast:error': [error: unknown, ctx: CallContext]
  /** A message from a peer was dropped (undecodable, unknown frame, beyond every limit). */
  'frame:dropped': [error: BilateralError]
  /** Encrypted nodes: a key outside `authorizedKeys` tried to connect and was refused during the handshake. */
  'auth:rejected': [publicKey: string]
  /** A ZeroMQ handshake on our listening socket failed; `error.code` is `AUTH` or `HANDSHAKE`. */
  'handshake:error': [error: BilateralError]
  /** A connection to our listening socket was refused during its handshake for a limit (`maxConnections`, `maxConnectionsPerAddress`, file descriptors). */
  'connection:refused': [address: string, reason: string]
  /** Membership: a member entered the table, or came back (left or gone before). */
  'member:join': [member: MemberInfo]
  /** Membership: a newer record of a member changed what it says (addresses, roles, offers, a restart). */
  'member:update': [member: MemberInfo]
  /** Membership: a member left, is gone (`why` says why), or was forgotten to make room. */
  'member:leave': [member: MemberInfo]
}

/** What `stats()` returns: table sizes (all zero after close()) and counters. */
export interface BilateralStats extends MeshStats {
  /** Calls we made that are outstanding. */
  pending: number
  timerQueues: number
  /** Peers with calls of ours outstanding. */
  inflight: number
  /** AbortSignals watched for calls of ours outstanding. */
  signals: number
  /** Handlers running for remote callers, and the bytes of arguments they hold. */
  running: number
  runningBytes: number
  /** Peers with handlers running for them. */
  runningPeers: number
  /** Answers whose caller's connection was gone, or that went down: dropped, never sent to another process under its name. */
  repliesDropped: number
  /** Answers of handlers whose caller had cancelled the call: dropped. */
  cancelledAnswers: number
  /** Answers of handlers that finished after their caller's deadline: dropped. */
  lateAnswers: number
  /** CALLs that arrived with no time left: not run. */
  expiredCalls: number
  /** Answers that settled nothing: to no call of ours, or from another process under the peer's name. */
  strayReplies: number
  /** With membership (`seeds`): members in the table, and what membership counted. */
  members?: MembershipCounts & { members: number; seedFailures: number }
}

/** The encoded CALL/CAST envelope besides the method name (array, version, type, call id, string header), bytes. */
const ENVELOPE_OVERHEAD = 16
/**
 * Our receive window in messages (PROTOCOL.md 3.3); in bytes it is
 * `maxQueuedBytes`. Small: batches carry up to 512 frames each.
 */
export const WINDOW_MESSAGES = 64
/** Messages libzmq queues per connection towards a peer (its default). */
const SEND_QUEUE = 1000

export class Bilateral extends EventEmitter<BilateralEvents> {
  /** This node's name. */
  readonly name: string
  /** This node's network name. */
  readonly network: string
  private readonly options: ResolvedOptions
  private readonly registry: Registry
  private readonly outgoing: OutgoingCalls
  private readonly incoming: IncomingCalls
  private readonly mesh: Mesh
  private closed = false
  private readonly waiters = new Set<Waiter>()
  /** dial()s by address alone not settled yet, by address. */
  private readonly addressDials = new Map<string, Promise<string>>()
  private readonly clock: Clock
  /** The interceptors of each direction, in the order added (a Chain's hooks are replaced, never changed in place, so a hook adding or removing one does not disturb the run it is in). */
  private readonly outboundHooks = new Chain<OutboundCall, OutboundResult>()
  private readonly inboundHooks = new Chain<InboundCall, InboundEnd>()
  /** The `metrics` option's counters, if on. */
  private readonly counters: Metrics | undefined
  /** The `seeds` option's membership, if on. */
  private membership: Membership | undefined
  /** The endpoints this node listens on. */
  private readonly endpoints: string[] = []
  /** Peers that went down and are not dialled, most recent last: what peers() shows of them (at most MAX_DOWNS). */
  private readonly downs = new Map<
    string,
    { reason: DownReason; at: number; direction: 'outbound' | 'inbound'; address: string | undefined }
  >()
  /** Where this node logs, if anywhere (the `logger` option, or DEBUG=bilateral). */
  private readonly log: ReturnType<typeof logTo>
  /** The metadata keys a handler's onward calls carry over. */
  private readonly forwardMeta: ReadonlySet<string>

  /** @param clock for tests only: the time source of every timer. */
  constructor(options: BilateralOptions, clock: Clock = systemClock) {
    super()
    this.options = resolveOptions(options)
    this.clock = clock
    const o = this.options
    this.name = o.name
    this.network = o.network
    this.registry = new Registry(o.defaultExposure)
    this.authorized = toPredicate(o.authorizedKeys ?? (() => true))
    if (o.introspection !== false) {
      const served: Introspected = {
        name: this.name,
        network: this.network,
        roles: [...o.roles],
        started: Date.now(),
        addresses: () => [...this.endpoints],
        visibleTo: (peer) => this.registry.visibleTo(peer),
        peers: () => this.peers(),
        stats: () => (this.counters === undefined ? this.stats() : { ...this.stats(), metrics: this.counters.figures() }),
        activePeers: () => this.mesh.activeNames().length,
      }
      const { methods = DEFAULT_INTROSPECTION, peers = o.defaultExposure } = o.introspection
      this.registry.register(introspection(served), '$node', { methods, ...(peers === undefined ? {} : { peers }) }, true)
    }
    const codec = new Codec()
    this.forwardMeta = new Set(o.forwardMeta)
    const log = (this.log = logTo(o.logger, this.name))
    this.outgoing = new OutgoingCalls(clock, codec)
    const caller: Caller = {
      call: (to, method, args, options) => this.call(to, method, args, options),
      stream: (to, method, args, options) => this.stream(to, method, args, options),
      cast: (to, method, args, options) => this.cast(to, method, args, options),
    }
    this.incoming = new IncomingCalls(
      this.registry,
      codec,
      o,
      {
        liveLink: (peer) => this.mesh.linkTo(peer),
        castError: (error, ctx) => this.emit('cast:error', error, ctx),
        encode: (value, method) => encodeWithin(value, o.maxMessageSize, `the result of ${method}`),
        caller,
        refused: (peer, method, code, message) => {
          if (log !== undefined) this.logRefusal(peer, method, code, message)
          this.counters?.refused(peer, method, code, code !== 'NO_SUCH_METHOD')
        },
        inbound: this.inboundHooks,
      },
      clock,
    )
    this.counters = o.metrics ? new Metrics() : undefined
    if (this.counters !== undefined) this.use(this.counters)
    const run = incarnation()
    this.mesh = new Mesh(
      o,
      clock,
      {
        up: (peer, link) => {
          log?.('info', 'peer up', { peer, direction: link.direction })
          this.membership?.up(peer)
          this.downs.delete(peer)
          for (const waiter of [...this.waiters]) waiter.up(peer)
          this.emit('peer:up', peer)
        },
        down: (peer, reason, link) => {
          // A peer that left, restarted or lost its connection will not answer; one that stalled (TIMEOUT) might yet.
          // The handlers running for it are aborted for the same reasons: their answers have no one to go to.
          if (reason !== 'TIMEOUT' && reason !== 'CLOSED') {
            this.outgoing.failPeer(peer, 'PEER_DOWN', `${peer} is down (${reason})`)
            this.incoming.peerDown(peer, reason)
          }
          log?.(reason === 'PART' || reason === 'CLOSED' || reason === 'DISCONNECT' ? 'info' : 'warn', 'peer down', { peer, reason })
          this.downs.delete(peer)
          this.downs.set(peer, { reason, at: this.clock.now(), direction: link.direction, address: link.address })
          if (this.downs.size > MAX_DOWNS) this.downs.delete(this.downs.keys().next().value!)
          for (const waiter of this.waiters) waiter.down(peer)
          this.membership?.down(peer)
          this.emit('peer:down', peer, reason)
        },
        refused: (peer, error, ours) => {
          log?.('warn', 'peer refused', { peer, code: error.code, why: error.message })
          // A JOIN refused to us names whoever its sender claimed: for a peer we dial, only our own dial's refusal is its.
          if (ours || !this.mesh.isDialling(peer)) for (const waiter of [...this.waiters]) waiter.refused(peer, error)
          // A member whose dial is refused for good is lost at once; a failed handshake counts only on an encrypted mesh, where it
          // means another key answers (plaintext handshakes fail under load, and are retried).
          const final = ours && this.refusedForGood(peer, error.code) && (error.code !== 'HANDSHAKE' || this.encrypted)
          if (this.membership !== undefined && final)
            this.membership.refusedForGood(peer, error.message, this.mesh.dialState(peer)?.address)
          this.emit('peer:refused', peer, error)
        },
        data: (link, frame) => this.onData(link, frame),
        dropped: (error) => {
          log?.('debug', 'frame dropped', { peer: error.peer, code: error.code, why: error.message })
          this.emit('frame:dropped', error)
        },
        handshakeFailed: (error) => {
          log?.('warn', 'handshake failed', { peer: error.peer, code: error.code, why: error.message })
          this.emit('handshake:error', error)
        },
        authRejected: (key) => {
          log?.('warn', 'key refused', { key })
          this.emit('auth:rejected', key)
        },
        connectionRefused: (address, why) => {
          log?.('warn', 'connection refused', { address, why })
          this.emit('connection:refused', address, why)
        },
        dialling: (peer, address) => log?.('debug', 'dialling', { peer, address }),
        backingOff: (peer, ms) => log?.('debug', 'backing off', { peer, retryInMs: ms }),
      },
      this.identity(run),
      {
        window: { messages: WINDOW_MESSAGES, bytes: o.maxQueuedBytes },
        backlog: o.maxQueuedBytes,
        sendQueue: SEND_QUEUE,
        incarnation: run,
      },
    )
    try {
      this.checkSeedKeys(o.seeds ?? [])
      this.membership = o.seeds === undefined ? undefined : this.joinMembership(o.seeds, o)
    } catch (error) {
      // The mesh holds a timer and a place in a libzmq context: a node that was never made frees them.
      this.mesh.close().catch(() => undefined)
      throw error
    }
  }

  /**
   * Join a mesh that forms itself, from a running node: as the `seeds`
   * option does, given now (`[]` makes this node a first member), with
   * `advertise` and `resolver` as those options would be. With membership
   * on already, these seeds are added (at most 64 in all), and `options`
   * must be empty: what a member announces is set when it joins.
   * Throws INVALID_ARGUMENT for seeds or options the constructor would
   * refuse, `CLOSED`.
   */
  joinMesh(seeds: readonly string[], options: JoinMeshOptions = {}): void {
    this.assertOpen()
    // close() has begun (membership says we leave): as closed.
    if (this.membership?.leaving === true) throw closedError()
    checkSeeds(seeds, this.encrypted)
    this.checkSeedKeys(seeds)
    checkJoinOptions(options)
    if (this.membership === undefined) this.membership = this.joinMembership(seeds, options)
    else if (options.advertise !== undefined || options.resolver !== undefined) {
      throw new BilateralError(
        'INVALID_ARGUMENT',
        'joinMesh(): this node is a member already; advertise and resolver are set when it joins',
      )
    } else this.membership.addSeeds(seeds)
  }

  /** A seed's key must be one authorizedKeys admits: membership dials no key the node would refuse. */
  private checkSeedKeys(seeds: readonly string[]): void {
    for (const seed of seeds) {
      const { key } = parseSeed(seed)
      if (key !== undefined && !this.authorized(key)) {
        throw new BilateralError('INVALID_ARGUMENT', `option seeds: the key of seed ${seed} is not one authorizedKeys admits`)
      }
    }
  }

  /** Membership (the `seeds` option, or joinMesh()): its table, `$mesh` for the other members, and its rounds. */
  private joinMembership(seeds: readonly string[], { advertise, resolver }: JoinMeshOptions): Membership {
    const membership = new Membership(
      {
        name: this.name,
        clock: this.clock,
        addresses: () => [...this.endpoints],
        connect: (name, address) => this.connect(name, address),
        disconnect: async (name, how) => this.mesh.stop(name, how),
        dial: (address, options) => this.dial(address, options),
        dialling: (name) => this.mesh.isDialling(name),
        dialAddress: (name) => this.mesh.dialState(name)?.address,
        isUp: (name) => this.mesh.linkTo(name) !== undefined,
        upNames: () => this.mesh.activeNames(),
        request: (peer, method, args, options) => this.request(peer, method, args, options),
        // Not the public cast(): the news that we leave goes out after close() has begun, when that refuses.
        cast: (to, method, args) => this.castNow(to, method, args),
        offers: () => [...this.registry.announced],
        admits: (name) => this.admitsMember(name),
        event: (kind, member) => {
          this.log?.('debug', `member ${kind}`, { peer: member.name, state: member.state, why: member.why })
          this.emit(`member:${kind}`, member)
        },
      },
      {
        seeds,
        resolver: resolver ?? systemResolver,
        advertise,
        roles: this.options.roles,
        gossipInterval: this.options.gossipInterval,
        suspectTimeout: this.options.peerTimeout,
      },
    )
    // Every member may ask: membership is how the mesh holds together, whatever defaultExposure says of receivers.
    this.registry.register(membership.receiver(), '$mesh', { peers: () => true }, true)
    membership.start()
    return membership
  }

  /**
   * Every member this node knows (the `seeds` option), itself first, and
   * where each stands: `self`, `known` (no link yet), `connecting`, `up`,
   * `suspect` (its link went down), `gone` (not back within `peerTimeout`;
   * no longer dialled), `left` (it said so). Throws INVALID_ARGUMENT
   * without membership.
   */
  members(): MemberInfo[] {
    if (this.membership === undefined) {
      throw new BilateralError('INVALID_ARGUMENT', 'membership is off: new Bilateral({ ..., seeds: [...] }) ([] for the first member)')
    }
    return this.membership.members()
  }

  /** May a member record of `name` be kept: any name on a plaintext mesh; on an encrypted one, a key `authorizedKeys` admits. */
  private admitsMember(name: string): boolean {
    if (this.options.keypair === undefined) return true
    if (!isKey(name)) return false
    return this.authorized(name)
  }

  /** `authorizedKeys` as a predicate (every key without it), not counting the trust our own dials give. */
  private readonly authorized: (key: string) => boolean

  /** Whether this node encrypts its traffic (it was given a keypair). */
  get encrypted(): boolean {
    return this.options.keypair !== undefined
  }

  private identity(own: Uint8Array): Identity | undefined {
    const keys = this.options.keypair
    if (keys === undefined) return undefined
    if (derivePublicKey(keys.secretKey) !== keys.publicKey) {
      throw new BilateralError('INVALID_ARGUMENT', 'option keypair: publicKey does not belong to secretKey')
    }
    const { network, legacyJoinProofs } = this.options
    const authorized = this.authorized
    // Keys we dial are trusted for the connection we asked for, whichever side opens it, until disconnect().
    const allows = (key: string): boolean => authorized(key) || this.mesh.isDialling(key)
    return {
      publicKey: keys.publicKey,
      pending: sodiumPending,
      proof: (peer, challenge) =>
        challenge === undefined
          ? makeJoinProof(network, keys.secretKey, peer)
          : makeFreshProof(network, keys.secretKey, peer, challenge, own),
      verifier: {
        nonce: () => randomBytes(NONCE_BYTES),
        verify: (join, nonce) => {
          // The claimed name must be admissible too: holding an allowed key and another key's secret must not let that other key in.
          if (!allows(join.name)) return 'this key is not authorised here'
          if (
            join.incarnation !== undefined &&
            nonce !== undefined &&
            checkFreshProof(join.proof, network, join.name, keys.secretKey, nonce, join.incarnation)
          ) {
            return undefined
          }
          const staticProof = checkJoinProof(join.proof, network, join.name, keys.secretKey)
          // A dialler of this release sends its first JOIN before our CHALLENGE reaches it; its answer follows.
          if (join.incarnation !== undefined && staticProof) return 'wait'
          if (staticProof && legacyJoinProofs) return undefined
          return staticProof
            ? 'the JOIN proof does not answer our CHALLENGE (a dialler of an earlier release? see legacyJoinProofs)'
            : 'the JOIN does not prove that the dialler holds the key it claims as its name'
        },
      },
      admitsKey: (raw) => {
        const key = z85Encode(raw)
        if (allows(key)) return true
        this.log?.('warn', 'key refused', { key })
        this.emit('auth:rejected', key)
        return false
      },
      allows,
    }
  }

  /**
   * Bind to `address` (for example `tcp://127.0.0.1:*`) so peers can dial us.
   * Resolves to the bound endpoint. May be called several times. An address
   * in use is retried for up to 500 ms (a port a closed node just released is
   * freed asynchronously). Rejects with `BIND_FAILED` or `CLOSED`.
   */
  async listen(address: string): Promise<string> {
    this.assertOpen()
    checkEndpoint(address)
    // An encrypted listener checks JOIN proofs as they come: the crypto library must be ready first.
    if (this.encrypted) await sodiumPending()
    this.assertOpen()
    const giveUp = performance.now() + BIND_RETRY_MS
    for (;;) {
      try {
        const endpoint = await this.mesh.listen(address)
        // close() began meanwhile: the socket closes with the node, and the caller is not handed an address that is going.
        if (this.closing !== undefined) throw closedError()
        this.endpoints.push(endpoint)
        return endpoint
      } catch (error) {
        if (this.closing !== undefined) throw closedError()
        const inUse = (error as { code?: unknown }).code === 'EADDRINUSE'
        if (!inUse || performance.now() >= giveUp) {
          throw new BilateralError('BIND_FAILED', `cannot listen on ${address}: ${(error as Error).message}`, { cause: error })
        }
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }

  /**
   * Expose `receiver`'s methods to peers as `name.Method` (name defaults to
   * the class name). `options.peers` limits who may call it (others get
   * NO_SUCH_METHOD, so nothing leaks about what exists); `options.methods`
   * exposes only the listed methods. Returns the full method names exposed.
   * Throws `ALREADY_REGISTERED` or `INVALID_ARGUMENT`.
   */
  register<T extends object = object>(receiver: NoInfer<Implementation<T>>, name?: string, options?: RegisterOptions): string[] {
    this.assertOpen()
    const methods = this.registry.register(receiver, name, options)
    this.membership?.refresh()
    return methods
  }

  /**
   * A typed handle on receiver `name` of contract `T` (its class, or an
   * interface): `node.service<Arith>('Arith', { peer: 'b' }).SumDiff(args)`
   * resolves to that peer's result or rejects with its error;
   * with `peers` (every active peer if empty or absent) each method resolves
   * to a result per peer, as `call()` does. The other options are the
   * defaults of every call it makes. Methods are not checked here: a peer
   * that has none answers `NO_SUCH_METHOD`.
   */
  service<T>(name: string, options: ServiceOptions & { peer: string | MemberSelector }): Unicast<T>
  service<T>(name: string, options?: ServiceOptions & { peer?: undefined }): Multicast<T>
  service<T>(name: string, options?: ServiceOptions): Unicast<T> | Multicast<T>
  service<T>(name: string, options?: ServiceOptions): Unicast<T> | Multicast<T> {
    if (options !== undefined) checkOptions(options, SERVICE_OPTIONS, 'service()')
    return makeService(this.serviceHost, name, options) as Unicast<T> | Multicast<T>
  }

  private readonly serviceHost: ServiceHost = {
    request: (peer, method, args, options) => this.request(peer, method, args, options),
    call: (to, method, args, options) => this.call(to, method, args, options),
  }

  /**
   * Call `method` on one peer: resolves to its reply, or rejects with the
   * {@link BilateralError} it failed with (`RemoteError` for a handler's
   * error, `TIMEOUT`, `NOT_CONNECTED`, ...). The rest is as for {@link call}.
   */
  request<R = unknown>(peer: string | MemberSelector, method: string, args?: unknown, options: CallOptions = {}): Promise<R> {
    try {
      if (typeof peer !== 'string' && !isSelector(peer)) {
        throw new BilateralError(
          'INVALID_ARGUMENT',
          `request() takes one peer name or a member selector, not ${describeValue(peer)}; call() takes a list of peers`,
        )
      }
      const prepared = this.prepare(method, args, options, this.request)
      const sink = (resolve: (reply: unknown) => void, reject: (error: unknown) => void) => new Single(resolve, reject)
      return this.launched([typeof peer === 'string' ? peer : this.pickMember(peer, method)], prepared, sink) as Promise<R>
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Dial peer `name` at `address` and keep the connection up (rejoining with
   * back-off) until `disconnect(name)` or `close()`. Returns at once.
   * Throws `LOOPBACK` (our own name), `ALREADY_CONNECTED`, `INVALID_ARGUMENT`,
   * `SOCKET` (no socket could be made: too few file descriptors are left).
   */
  connect(name: string, address: string): void {
    this.assertOpen()
    checkName('peer name', name)
    if (name === this.name)
      throw new BilateralError('LOOPBACK', `cannot connect to ourselves (${name}): loopback forbidden`, { peer: name })
    if (this.encrypted && !isZ85Key(name)) {
      throw new BilateralError('INVALID_ARGUMENT', 'an encrypted node connects to peers by their public key (40-character Z85)', {
        peer: name,
      })
    }
    if (isEndpoint(name) && typeof address === 'string' && !isEndpoint(address)) {
      throw new BilateralError(
        'INVALID_ARGUMENT',
        `connect(name, address) takes the peer's name first: connect(${JSON.stringify(address)}, ${JSON.stringify(name)})?`,
      )
    }
    checkEndpoint(address)
    this.mesh.dial(name, address)
  }

  /**
   * Connect to whichever node listens at `address`, when its name is not
   * known, and resolve with that name once it is up; from then on it is a
   * peer as {@link connect} makes one (calls, `disconnect(name)`, redialled
   * under that name, so a different node at the address is `WRONG_NAME`).
   * If `address` is dialled already, resolves with that peer's name once up.
   * Rejects, and stops dialling, with `TIMEOUT` after `options.timeout`
   * (default `callTimeout`) naming what the last attempt met, at once with a
   * refusal retrying cannot fix (`NETWORK_MISMATCH`, `HANDSHAKE`, ...), and
   * with `INVALID_ARGUMENT` on an encrypted node, which dials by key.
   */
  dial(address: string, options: WaitOptions = {}): Promise<string> {
    if (this.closing !== undefined) return Promise.reject(closedError())
    let timeout: number
    try {
      checkEndpoint(address)
      checkOptions(options, WAIT_OPTIONS, 'dial()')
      timeout = options.timeout === undefined ? this.options.callTimeout : checkTimeout(options.timeout)
      if (this.encrypted) {
        throw new BilateralError(
          'INVALID_ARGUMENT',
          `an encrypted node dials a peer by its public key, which CURVE needs before it connects: connect(key, ${JSON.stringify(address)})`,
        )
      }
    } catch (error) {
      return Promise.reject(error)
    }
    const known = this.mesh.dialledAt(address)
    if (known !== undefined) return this.waitForPeers([known], { timeout }).then(() => known)
    // The same address dialled again before the first learnt its name: the same answer.
    const pending = this.addressDials.get(address)
    if (pending !== undefined) return pending
    const dialled = this.dialAddress(address, timeout)
    this.addressDials.set(address, dialled)
    const forget = (): void => void this.addressDials.delete(address)
    dialled.then(forget, forget)
    return dialled
  }

  /** dial(): start a dial by address alone and wait for its peer to come up, within `timeout`. */
  private dialAddress(address: string, timeout: number): Promise<string> {
    return new Promise((resolve, reject) => {
      let name: string | undefined
      /** Whether the dial waited for is this one (false: a connect() of the same address is). */
      let ours = true
      const waiter: Waiter = {
        up: (peer) => {
          if (peer === name) waiter.settle()
        },
        down: () => {},
        // Refusals come from the dial itself (below), not from what anyone else's JOIN claims.
        refused: () => {},
        settle: (error) => {
          this.clock.clearTimer(timer)
          this.waiters.delete(waiter)
          if (error === undefined) return resolve(name!)
          // The caller has no name to disconnect() with: a dial that failed stops here (close() stops them all).
          if (!this.closed) {
            if (name === undefined) this.mesh.stopAddress(address)
            else if (ours) this.mesh.stop(name)
          }
          reject(error)
        },
      }
      const timer = this.clock.setTimer(() => {
        const what = name === undefined ? `no node answered at ${address}` : `${name} at ${address} is not active`
        waiter.settle(new BilateralError('TIMEOUT', `${what} after ${timeout} ms (${this.lastState(name ?? address)})`, { peer: name }))
      }, timeout)
      this.waiters.add(waiter)
      try {
        this.mesh.dialAddress(address, {
          named: (peer) => {
            name = peer
            if (this.mesh.linkTo(peer) !== undefined) waiter.settle()
          },
          refused: (error) => {
            if (error.code !== 'ALREADY_CONNECTED') {
              if (this.refusedForGood(address, error.code)) waiter.settle(finalRefusal(address, error))
              return
            }
            // The node there is one of our peers: the one it names, if we are linked to it, or the one a connect() of ours dials at this address.
            this.mesh.stopAddress(address)
            const claimed =
              error.peer !== undefined && error.peer !== address && this.mesh.linkTo(error.peer) !== undefined ? error.peer : undefined
            const known = claimed ?? this.mesh.dialledAt(address)
            if (known === undefined) return waiter.settle(error)
            name = known
            ours = false
            if (this.mesh.linkTo(known) !== undefined) waiter.settle()
          },
        })
      } catch (error) {
        waiter.settle(error as Error)
      }
    })
  }

  /**
   * Stop dialling `name`; if the live link to it is the one we dialled, part it
   * (the peer sees PART at once). Pending calls to it fail with `PEER_DOWN`.
   * On an encrypted node, the trust that dialling gave its key ends too: an
   * inbound link of that key that `authorizedKeys` does not allow is cut.
   * Rejects with `NOT_CONNECTED` if we never connected to `name`.
   */
  async disconnect(name: string): Promise<void> {
    this.assertOpen()
    if (!this.mesh.isDialling(name)) throw new BilateralError('NOT_CONNECTED', `not connected to ${name}`, { peer: name })
    this.mesh.stop(name)
  }

  /**
   * Resolve once every peer in `names` is active. Rejects with `TIMEOUT`
   * (naming the missing ones, with why each last failed where that is known)
   * or `CLOSED`.
   */
  waitForPeers(names: readonly string[], options: WaitOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(closedError())
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
      return Promise.reject(new TypeError('names must be an array of strings'))
    }
    let timeout: number
    try {
      checkOptions(options, WAIT_OPTIONS, 'waitForPeers()')
      timeout = options.timeout === undefined ? this.options.callTimeout : checkTimeout(options.timeout)
    } catch (error) {
      return Promise.reject(error)
    }
    const missing = new Set(names.filter((name) => this.mesh.linkTo(name) === undefined))
    if (missing.size === 0) return Promise.resolve()
    // Already refused for good: say so now, not at the next attempt.
    for (const name of missing) {
      const dial = this.mesh.dialState(name)
      if (dial?.refusal !== undefined && this.refusedForGood(name, dial.refusal)) {
        return Promise.reject(finalRefusal(name, new BilateralError(dial.refusal, dial.failure ?? dial.refusal, { peer: name })))
      }
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        up: (name) => {
          missing.delete(name)
          if (missing.size === 0) waiter.settle()
        },
        down: (name) => {
          if (names.includes(name)) missing.add(name)
        },
        refused: (name, error) => {
          if (missing.has(name) && this.refusedForGood(name, error.code)) waiter.settle(finalRefusal(name, error))
        },
        settle: (error) => {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          if (error === undefined) resolve()
          else reject(error)
        },
      }
      const timer = setTimeout(() => {
        const why = [...missing].map((name) => `${name} (${this.lastState(name)})`)
        waiter.settle(new BilateralError('TIMEOUT', `peers not active after ${timeout} ms: ${why.join(', ')}`))
      }, timeout)
      timer.unref()
      this.waiters.add(waiter)
    })
  }

  /** Names of the active peers, whichever side dialled. */
  activeConnections(): string[] {
    return this.mesh.activeNames()
  }

  /**
   * Each active peer with the direction of the one connection that serves it:
   * `outbound` if we dialled it, `inbound` if it dialled us.
   */
  links(): { peer: string; direction: 'outbound' | 'inbound' }[] {
    return this.mesh.links()
  }

  /**
   * Add an interceptor: `outbound(call)` runs before each call, stream,
   * request and cast this node makes (throw to refuse it: the caller gets
   * that error), and what it returns is told each peer's result with the
   * time it took; `inbound(call)` runs before each handler for a peer's call
   * or cast (throw to refuse it: the caller gets it as the handler's error),
   * and what it returns is told how the call ended. Interceptors run in the
   * order added. Returns a function that removes it.
   */
  use(interceptor: Interceptor): () => void {
    if (interceptor === null || typeof interceptor !== 'object') throw new TypeError('use() takes { outbound?, inbound? }')
    // A plain object's other keys are typos (outbund); a class instance keeps its own state beside its hooks.
    const plain = Object.getPrototypeOf(interceptor) === Object.prototype || Object.getPrototypeOf(interceptor) === null
    const unknown = plain ? unknownOption(interceptor, new Set(['outbound', 'inbound']), 'use()') : undefined
    if (unknown !== undefined) throw new TypeError(unknown)
    const { outbound, inbound } = interceptor
    if ((outbound !== undefined && typeof outbound !== 'function') || (inbound !== undefined && typeof inbound !== 'function')) {
      throw new TypeError('use(): outbound and inbound must be functions')
    }
    const out = outbound?.bind(interceptor)
    const into = inbound?.bind(interceptor)
    const removeOut = out === undefined ? undefined : this.outboundHooks.add(out)
    const removeIn = into === undefined ? undefined : this.inboundHooks.add(into)
    return () => {
      removeOut?.()
      removeIn?.()
    }
  }

  /**
   * What the `metrics` option counts: both ways, per method and per peer,
   * calls, outcomes by code, a latency histogram, in flight and bytes.
   * Throws INVALID_ARGUMENT when metrics are off.
   */
  metrics(): MetricsSnapshot {
    return this.metered().figures()
  }

  /** The same figures in the Prometheus text format, to serve at `/metrics`. */
  metricsText(): string {
    return this.metered().prometheus()
  }

  private metered(): Metrics {
    if (this.counters === undefined) throw new BilateralError('INVALID_ARGUMENT', 'metrics are off: new Bilateral({ ..., metrics: true })')
    return this.counters
  }

  /**
   * Every peer this node knows and where it stands: up (either side
   * dialled), being dialled (`connecting`: no connection yet; `joining`:
   * JOIN sent; `refused`: its JOIN was refused and is retried at `retryAt`;
   * `backoff`: a new connection at `retryAt`; `standby`: its own dial to us
   * is coming up instead), or `down` (it left or died, and we do not dial
   * it; the latest 256 such are kept). `why` and `code` say what the last
   * attempt met, or why it went down; `rtt` is the last ping's round trip on
   * a link this node dialled. Times are ms since the epoch.
   */
  peers(): PeerInfo[] {
    const offset = Date.now() - this.clock.now()
    const out: PeerInfo[] = []
    for (const p of this.mesh.snapshot()) {
      const down = p.state === 'up' ? undefined : this.downs.get(p.name)
      out.push({
        name: p.name,
        state: p.state,
        direction: p.direction,
        address: p.address,
        since: Math.round(p.since + offset),
        retryAt: p.retryAt === undefined ? undefined : Math.round(p.retryAt + offset),
        why: p.failure ?? (down === undefined ? undefined : `went down (${down.reason})`),
        code: p.refusal ?? down?.reason,
        rtt: p.rtt,
      })
    }
    const listed = new Set(out.map((p) => p.name))
    for (const [name, down] of this.downs) {
      if (listed.has(name)) continue
      const why = `went down (${down.reason})`
      out.push({
        name,
        state: 'down',
        direction: down.direction,
        address: down.address,
        since: Math.round(down.at + offset),
        retryAt: undefined,
        why,
        code: down.reason,
        rtt: undefined,
      })
    }
    return out
  }

  /** Number of active peers. */
  connectionCount(): number {
    return this.mesh.activeNames().length
  }

  /**
   * Call `method` on each peer in `to` (every active peer if empty) and gather
   * one {@link CallResult} per peer: replies first in arrival order, then
   * errors (`REMOTE`, `NO_SUCH_METHOD`, `NOT_CONNECTED`, `TIMEOUT`,
   * `CANCELLED`, `PEER_DOWN`, `OVERLOADED`, `CLOSED`). Resolves as soon as
   * every peer has answered, or `until` is met (or can no longer be), or
   * `signal` aborts: the peers left then get `CANCELLED`, and a CANCEL.
   * Rejects with a TypeError for a bad option or arguments msgpack cannot
   * carry faithfully, with `TOO_LARGE` for arguments, metadata or a method
   * name beyond their limits, with what an `until` function threw, and with
   * `CLOSED` after `close()`.
   */
  call<R = unknown>(
    to: readonly string[] | MemberSelector = [],
    method: string,
    args?: unknown,
    options: CallOptions = {},
  ): Promise<CallResult<R>[]> {
    try {
      const prepared = this.prepare(method, args, options, this.call)
      const sink = (resolve: (results: CallResult[]) => void, reject: (error: unknown) => void) => new Collector(resolve, reject)
      return this.launched(this.addressed(to, method), prepared, sink) as Promise<CallResult<R>[]>
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** A prepared call launched to `to` at once, or (`waitForPeers`) once the peers it waits for are up; settled through its sink. */
  private launched<T>(
    to: readonly string[],
    prepared: Prepared,
    sinkOf: (resolve: (value: T) => void, reject: (error: unknown) => void) => CallSink,
  ): Promise<T> {
    if (prepared.waitForPeers) return this.waitThenLaunch(to, prepared, sinkOf)
    return new Promise<T>((resolve, reject) => void this.launch(to, prepared, () => sinkOf(resolve, reject)))
  }

  /**
   * `waitForPeers`: wait, within the call's timeout (its parent's deadline
   * included) and until one of its signals aborts, for the peers it names
   * that we are connecting to, or for a first peer when it names none and
   * there is none; then launch it with the time left.
   */
  private async waitThenLaunch<T>(
    to: readonly string[],
    prepared: Prepared,
    sinkOf: (resolve: (value: T) => void, reject: (error: unknown) => void) => CallSink,
  ): Promise<T> {
    if (!Array.isArray(to)) this.targets(to, [])
    const began = this.clock.now()
    // Peers we connect to that are not up, unless already refused for good (they would not come up).
    const awaited =
      to.length === 0 && to !== NOBODY
        ? undefined
        : to.filter((name) => {
            const dial = this.mesh.linkTo(name) === undefined ? this.mesh.dialState(name) : undefined
            return dial !== undefined && (dial.refusal === undefined || !this.refusedForGood(name, dial.refusal))
          })
    if (!prepared.expired && (awaited === undefined ? this.mesh.activeNames().length === 0 : awaited.length > 0)) {
      await this.untilUp(awaited, prepared.timeout, prepared.signals)
    }
    prepared.timeout = Math.max(1, prepared.timeout - (this.clock.now() - began))
    const aborted = prepared.signals?.find((signal) => signal.aborted)
    if (aborted !== undefined) {
      // Cancelled while it waited: every peer it named is CANCELLED, as for a call cancelled in flight; nothing is sent.
      return new Promise<T>((resolve, reject) => {
        const sink = sinkOf(resolve, reject)
        for (const peer of new Set(to)) {
          sink.result({
            from: peer,
            ok: false,
            error: new BilateralError('CANCELLED', `the call to ${peer} was cancelled: ${abortMessage(aborted)}`, { peer }),
          })
        }
        sink.end()
      })
    }
    return new Promise<T>((resolve, reject) => {
      this.assertOpen()
      this.launch(to, prepared, () => sinkOf(resolve, reject))
    })
  }

  /** Resolves when every peer in `names` is up (any one, if undefined), or after `timeout`, or when a signal aborts or the node closes. */
  private untilUp(names: readonly string[] | undefined, timeout: number, signals: readonly AbortSignal[] | undefined): Promise<void> {
    const missing = new Set(names)
    return new Promise((resolve) => {
      const waiter: Waiter = {
        up: (name) => {
          missing.delete(name)
          if (names === undefined || missing.size === 0) waiter.settle()
        },
        down: (name) => {
          if (names?.includes(name) === true) missing.add(name)
        },
        // A waited-for peer refused for good will not come up: stop waiting (it is then NOT_CONNECTED, saying why).
        refused: (name, error) => {
          if (missing.has(name) && this.refusedForGood(name, error.code)) waiter.settle()
        },
        settle: () => {
          this.clock.clearTimer(timer)
          for (const signal of signals ?? []) signal.removeEventListener('abort', stop)
          this.waiters.delete(waiter)
          resolve()
        },
      }
      if (signals?.some((signal) => signal.aborted) === true) return resolve()
      const stop = (): void => waiter.settle()
      for (const signal of signals ?? []) signal.addEventListener('abort', stop, { once: true })
      const timer = this.clock.setTimer(stop, timeout)
      this.waiters.add(waiter)
    })
  }

  /**
   * The same call as {@link call}, its results yielded one by one as they
   * settle: each addressed peer's exactly once (those known before anything
   * is sent, `NOT_CONNECTED` and `OVERLOADED`, first), `targets` naming them
   * all up front. Leaving the loop early (`break`, `return`, a throw)
   * cancels every peer still to answer. Throws at once what `call()` would
   * reject with for bad arguments or options.
   */
  stream<R = unknown>(
    to: readonly string[] | MemberSelector = [],
    method: string,
    args?: unknown,
    options: CallOptions = {},
  ): CallStream<R> {
    let stream!: CallStream<R>
    const prepared = this.prepare(method, args, options, this.stream)
    const id = this.launch(this.addressed(to, method), prepared, (targets) => (stream = new CallStream<R>(targets())).sink)
    if (id !== undefined) stream.started((why) => this.outgoing.cancelCall(id, why))
    return stream
  }

  /**
   * Send `method(args)` to each peer in `to` (every active peer if empty)
   * without waiting for any reply. Resolves to the names it was queued for;
   * named peers that are not active, or not reading, are left out.
   * `options.meta` goes with it (to peers of this release); a `parent`'s
   * forwarded metadata too.
   */
  async cast(to: readonly string[] | MemberSelector = [], method: string, args?: unknown, options: CastOptions = {}): Promise<string[]> {
    this.assertOpen()
    return this.castNow(to, method, args, options)
  }

  private async castNow(
    to: readonly string[] | MemberSelector,
    method: string,
    args?: unknown,
    options: CastOptions = {},
  ): Promise<string[]> {
    checkOptions(options, CAST_OPTIONS, 'cast()')
    this.checkMethod(method)
    to = this.addressed(to, method)
    const parent = options.parent === undefined ? undefined : checkParent(options.parent)
    const meta = this.metaFor(options.meta, parent)
    const body = encodeWithin(args, this.options.maxMessageSize, 'the arguments')
    const plain = [encodeCast(method), body]
    const rich = meta === undefined ? plain : [encodeCast(method, meta), body]
    const links = this.targets(to, [])
    if (this.outboundHooks.length > 0) {
      const call: OutboundCall = { method, to: links.map((l) => l.peer), cast: true, bytes: body.byteLength, options }
      const observers = this.outboundHooks.run(call, refusedOutbound, call)
      // Every hook let it through: each peer's result is that it was handed over (a cast has no other).
      if (observers !== undefined) for (const peer of call.to) report(observers, { from: peer, ok: true, reply: undefined }, 0, 0, call)
    }
    for (const link of links) link.post(link.lifecycle ? rich : plain)
    const sent = await Promise.all(links.map((link) => link.whenFlushed()))
    return links.filter((_, i) => sent[i]).map((link) => link.peer)
  }

  /**
   * Part from every peer, settle pending calls with `CLOSED`, close every
   * socket and timer. Late results of running handlers are discarded.
   */
  close(): Promise<void> {
    // One close, however many callers: each resolves once the sockets are closed, not when a second call finds it begun.
    this.closing ??= this.shut()
    return this.closing
  }

  private closing: Promise<void> | undefined

  private async shut(): Promise<void> {
    if (this.closed) return
    // Members are told first that we leave, so they do not wait for us to come back.
    if (this.membership?.leaving === false) await this.membership.leave()
    if (this.closed) return
    this.closed = true
    this.outgoing.failAll('CLOSED', 'the node was closed')
    this.incoming.close()
    for (const waiter of [...this.waiters]) waiter.settle(closedError())
    await this.mesh.close()
  }

  /**
   * Sizes of internal tables, all zero after close() (for leak checks), and
   * counters: `dropped` messages from peers that were not decoded (each
   * decoding failure is also `frame:dropped`), `refusedConnections` at the
   * handshake, `repliesDropped` (answers whose caller's connection was gone:
   * never sent to another process), `strayReplies` (answers to no call of
   * ours, or from another process under the peer's name).
   */
  stats(): BilateralStats {
    const { running, runningBytes, runningPeers } = this.incoming.size
    const { cancelled, late, expired, dropped } = this.incoming.unanswered
    return {
      pending: this.outgoing.size,
      timerQueues: this.outgoing.queueCount,
      inflight: this.outgoing.peersWaited,
      signals: this.outgoing.signalsWatched,
      running,
      runningBytes,
      runningPeers,
      ...this.mesh.stats(),
      repliesDropped: dropped,
      cancelledAnswers: cancelled,
      lateAnswers: late,
      expiredCalls: expired,
      strayReplies: this.outgoing.stray,
      ...(this.membership === undefined ? {} : { members: this.membership.stats() }),
    }
  }

  // --- internals -------------------------------------------------------------

  /**
   * Check a call's options and arguments, and work out what it is: its
   * timeout (its parent's deadline included), policy, signals, metadata and
   * encoded arguments, and the caller's stack where kept. Throws what the
   * caller rejects with for a mistake.
   */
  private prepare(method: string, args: unknown, options: CallOptions, entry: (...args: never[]) => unknown): Prepared {
    this.assertOpen()
    checkOptions(options, CALL_OPTIONS, entry === this.stream ? 'stream()' : entry === this.request ? 'request()' : 'call()')
    const waitForPeers = options.waitForPeers
    if (waitForPeers !== undefined && typeof waitForPeers !== 'boolean') throw new TypeError('waitForPeers must be a boolean')
    if (waitForPeers === true && entry === this.stream) {
      throw new TypeError('stream() cannot wait for peers: await node.waitForPeers([...]) first, or use call()')
    }
    let timeout = options.timeout === undefined ? this.options.callTimeout : checkTimeout(options.timeout)
    const policy = policyFor(options.until)
    let signals: AbortSignal[] | undefined
    if (options.signal !== undefined) {
      if (!(options.signal instanceof AbortSignal)) throw new TypeError('signal must be an AbortSignal')
      signals = [options.signal]
    }
    const parent = options.parent === undefined ? undefined : checkParent(options.parent)
    if (options.detach !== undefined && typeof options.detach !== 'boolean') throw new TypeError('detach must be a boolean')
    let expired = false
    if (parent !== undefined && options.detach !== true) {
      const left = Context.remaining(parent)
      if (left !== undefined) {
        if (left < 1) expired = true
        else timeout = Math.min(timeout, inherited(left))
      }
      ;(signals ??= []).push(parent.signal)
    }
    const meta = this.metaFor(options.meta, parent)
    this.checkMethod(method)
    const body = encodeWithin(args, this.options.maxMessageSize, 'the arguments')
    const site: { stack?: string } = {}
    if (this.options.callerStacks) Error.captureStackTrace(site, entry)
    return { method, timeout, policy, signals, meta, body, expired, site, waitForPeers: waitForPeers === true, options }
  }

  /**
   * Send a prepared call to `to` (every active peer if empty) through the
   * call table; `sinkFor` makes where its results go. Returns its id, or
   * undefined if it settled before anything was sent.
   */
  private launch(to: readonly string[], prepared: Prepared, sinkFor: (targets: () => readonly string[]) => CallSink): number | undefined {
    const { method, timeout, policy, signals, meta, body, site } = prepared
    const early: CallResult[] = []
    let links = this.targets(to, early, this.options.maxInflight)
    if (prepared.expired) {
      for (const link of links) {
        const error = new BilateralError('TIMEOUT', `not sent to ${link.peer}: the deadline of the call it serves has passed`, {
          peer: link.peer,
        })
        early.push({ from: link.peer, ok: false, error })
      }
      links = []
    }
    const names = (): string[] => {
      const out: string[] = []
      for (const e of early) out.push(e.from)
      for (const link of links) out.push(link.peer)
      return out
    }
    // Interceptors first: one may refuse the call (its throw is the caller's error), before anything is in the table.
    let observers: readonly OutboundResult[] | undefined
    let intercepted: OutboundCall | undefined
    if (this.outboundHooks.length > 0) {
      intercepted = { method, to: names(), cast: false, bytes: body.byteLength, options: prepared.options }
      observers = this.outboundHooks.run(intercepted, refusedOutbound, intercepted)
    }
    // Only stream() lists its targets: call() need not pay for the array.
    const sink = sinkFor(names)
    const started = this.outgoing.start(links, { method, timeout, early, site, sink, policy, signals, observers, intercepted })
    if (started === undefined) return undefined
    const plain = [encodeCall(started.id, method), body]
    // A peer of this release is told the time left unless it is what our JOIN/STAY announced; a peer of an earlier release reads neither field.
    const deadline = Math.ceil(timeout) === this.mesh.announcedCallTimeout ? undefined : Math.ceil(timeout)
    const rich = deadline === undefined && meta === undefined ? plain : [encodeCall(started.id, method, deadline, meta), body]
    for (const link of links) link.post(link.lifecycle ? rich : plain, started.tag)
    return started.id
  }

  /** A call's metadata, encoded: `meta` over what `parent` forwards; undefined if there is none. */
  private metaFor(meta: CallOptions['meta'], parent: CallContext | undefined): Uint8Array | undefined {
    checkMetaShape(meta)
    let all: unknown = meta
    if (parent !== undefined && this.forwardMeta.size > 0) {
      const forwarded = pick(parent.meta, this.forwardMeta)
      all = meta === undefined ? forwarded : { ...forwarded, ...meta }
    }
    return encodeMeta(all, this.options.maxMetaBytes)
  }

  /** Resolve `to` into live links; NOT_CONNECTED (and, given `limit`, OVERLOADED) entries go to `early`. */
  private targets(to: readonly string[], early: CallResult[], limit = Infinity): Link[] {
    if (!Array.isArray(to)) {
      throw new TypeError(
        `the peers to call must be an array of names, not ${describeValue(to)}: call(['b'], ...), or request('b', ...) for one peer`,
      )
    }
    const links: Link[] = []
    const all = to.length === 0 && to !== NOBODY
    const wanted = all ? this.mesh.activeNames() : to
    if (all && wanted.length === 0) this.warnNoPeers()
    // Names are unique when we list the active peers; a caller's list may repeat one (a Set only for long lists).
    const seen = all || wanted.length < 16 ? undefined : new Set<string>()
    for (const name of wanted) {
      if (typeof name !== 'string') throw new TypeError('to must be an array of peer names')
      if (!all && (seen === undefined ? links.some((l) => l.peer === name) || early.some((e) => e.from === name) : seen.has(name))) continue
      seen?.add(name)
      const link = this.mesh.linkTo(name)
      if (link === undefined) {
        const error = new BilateralError('NOT_CONNECTED', `${name} is not connected${this.whyNotUp(name)}`, { peer: name })
        early.push({ from: name, ok: false, error })
      } else if (this.outgoing.inflight(name) >= limit) {
        const error = new BilateralError('OVERLOADED', `${limit} calls to ${name} are already outstanding (maxInflight)`, { peer: name })
        early.push({ from: name, ok: false, error })
      } else {
        links.push(link)
      }
    }
    return links
  }

  /**
   * `to` as peer names: a list as given; a member selector resolved against
   * membership now, every member it addresses that is not gone or left
   * (NOBODY if none: an empty list would mean every peer).
   */
  private addressed(to: readonly string[] | MemberSelector, method: string): readonly string[] {
    if (!isSelector(to)) return to as readonly string[]
    const names = this.selected(to, method).names
    return names.length === 0 ? NOBODY : names
  }

  /**
   * The members `selector` addresses for `method` now (only those up, if
   * `up`), and what it asked for: as given, or (naming neither role nor
   * receiver) the members that announce the method's receiver. The method
   * is checked already. INVALID_ARGUMENT for a bad selector, or without
   * membership.
   */
  private selected(selector: MemberSelector, method: string, up = false): { names: string[]; wanted: MemberSelector } {
    const checked = checkSelector(selector)
    if (this.membership === undefined) {
      throw new BilateralError(
        'INVALID_ARGUMENT',
        `a call addressed to members (${describeSelector(checked)}) needs membership: new Bilateral({ ..., seeds: [...] })`,
      )
    }
    const wanted = checked.role !== undefined || checked.offers !== undefined ? checked : { offers: receiverOf(method) }
    return { names: this.membership.select(wanted, up), wanted }
  }

  /**
   * The one member a request addressed by selector goes to: of the members
   * it addresses that are up, the one with fewer calls of ours in flight of
   * two chosen at random. NOT_CONNECTED if none is up.
   */
  private pickMember(selector: MemberSelector, method: string): string {
    const { names: up, wanted } = this.selected(selector, method, true)
    if (up.length === 0) {
      throw new BilateralError('NOT_CONNECTED', `no member ${describeSelector(wanted)} is up`)
    }
    const a = up[Math.floor(Math.random() * up.length)]!
    if (up.length === 1) return a
    let b = up[Math.floor(Math.random() * (up.length - 1))]!
    if (b === a) b = up[up.length - 1]!
    return this.outgoing.inflight(b) < this.outgoing.inflight(a) ? b : a
  }

  private warnedNoPeers = false

  /** Once per node: a call or cast to every active peer reached none, which is easy to miss in an empty result. */
  private warnNoPeers(): void {
    if (this.warnedNoPeers) return
    this.warnedNoPeers = true
    process.emitWarning(
      `${this.name} made a call or cast to every active peer ([]) and has none: it reached no one. ` +
        'connect() to a peer first, or pass { waitForPeers: true } to wait for one (warned once per node)',
      { code: 'BILATERAL_NO_PEERS' },
    )
  }

  /** Why a peer is not up, for a message: what its dialling last met, or that we never dialled it. */
  private whyNotUp(name: string): string {
    const dial = this.mesh.dialState(name)
    if (dial?.failure === undefined && dial?.state === 'joining') return ' yet (connecting; pass waitForPeers: true to wait for it)'
    return ` (${this.lastState(name)})`
  }

  /**
   * Is a refusal with `code` one retrying cannot fix? A HANDSHAKE failure
   * counts only when two attempts in a row met it: a connection reset during
   * one handshake is how a wrong key shows, but also how a passing fault does.
   */
  private refusedForGood(name: string, code: ErrorCode): boolean {
    if (!FINAL_REFUSALS.has(code)) return false
    return code !== 'HANDSHAKE' || (this.mesh.dialState(name)?.refusals ?? 0) >= 2
  }

  /** The window of refused-call log lines: when it began (clock ms), lines in it, and lines left out. */
  private readonly refusals = { since: 0, logged: 0, left: 0 }

  /**
   * Log a refused call, at most 20 a second: a peer sending calls that are
   * refused must not flood the log. The next line logged says how many were
   * left out.
   */
  private logRefusal(peer: string, method: string, code: ErrorCode, message: string): void {
    const now = this.clock.now()
    const w = this.refusals
    if (now - w.since >= 1000) {
      w.since = now
      w.logged = 0
    }
    if (w.logged >= 20) {
      w.left++
      return
    }
    w.logged++
    const fields = w.left === 0 ? { peer, method, code, why: message } : { peer, method, code, why: message, notLogged: w.left }
    w.left = 0
    this.log?.('info', 'call refused', fields)
  }

  /** A peer's last state in words, for a TIMEOUT: what its dialling last met, or where it is. */
  private lastState(name: string): string {
    const dial = this.mesh.dialState(name)
    if (dial === undefined) return 'not dialled by this node, and it has not dialled us'
    if (dial.failure !== undefined) return dial.failure
    return dial.state === 'standby' ? 'its link from the other side is coming up' : 'no answer yet'
  }

  private onData(link: Link, frame: DataFrame): void {
    switch (frame.type) {
      case FrameType.CALL:
      case FrameType.CAST:
        return this.incoming.serve(link, frame)
      case FrameType.REPLY:
        return this.outgoing.reply(link, frame.id, frame.body)
      case FrameType.ERROR:
        return this.outgoing.error(link, frame)
      case FrameType.CANCEL:
        return this.incoming.cancel(link, frame.id)
    }
  }

  /** A method name of at most 1024 bytes that fits in an envelope a peer with our maxMessageSize accepts. */
  private checkMethod(method: unknown): asserts method is string {
    if (typeof method !== 'string' || method.length === 0) throw new TypeError('method must be a non-empty string')
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most names need no counting.
    if (3 * method.length <= MAX_METHOD_BYTES) return
    const size = Buffer.byteLength(method)
    const limit = Math.min(MAX_METHOD_BYTES, this.options.maxMessageSize - ENVELOPE_OVERHEAD)
    if (size > limit) throw new BilateralError('TOO_LARGE', `the method name is ${size} bytes, more than ${limit}`)
  }

  /** Once close() has begun (closed follows), nothing new starts: a member node tells its peers it leaves before it is closed, and meanwhile refuses too. */
  private assertOpen(): void {
    if (this.closing !== undefined) throw closedError()
  }
}

/** How long listen() retries an address in use, ms. */
const BIND_RETRY_MS = 500

/** How many peers that went down (and are not dialled) peers() remembers. */
const MAX_DOWNS = 256

/** A peer as `peers()` shows it. */
export interface PeerInfo {
  readonly name: string
  readonly state: 'up' | 'connecting' | 'joining' | 'refused' | 'backoff' | 'standby' | 'down'
  /** Which side dialled its link (up), or `outbound` for one being dialled. */
  readonly direction: 'outbound' | 'inbound'
  /** The address we dial it at, if we do. */
  readonly address: string | undefined
  /** When it entered this state, ms since the epoch. */
  readonly since: number
  /** `refused`, `backoff`: when the next attempt is due, ms since the epoch. */
  readonly retryAt: number | undefined
  /** What the last attempt met (`no connection at tcp://... yet (retrying)`), or why it went down. */
  readonly why: string | undefined
  /** The code of the last refusal (`NETWORK_MISMATCH`, `HANDSHAKE`, ...), or the reason it went down. */
  readonly code: ErrorCode | DownReason | undefined
  /** Up on a link this node dialled: the last ping's round trip, ms. */
  readonly rtt: number | undefined
}

/** A call checked and worked out, not yet sent (`prepare`, then `launch`). */
interface Prepared {
  readonly method: string
  /** ms; what is left of it once waited for peers. */
  timeout: number
  readonly policy: ReturnType<typeof policyFor>
  readonly signals: AbortSignal[] | undefined
  readonly meta: Uint8Array | undefined
  readonly body: Uint8Array
  /** Its parent's deadline has passed: nothing is sent. */
  readonly expired: boolean
  readonly site: { stack?: string }
  readonly waitForPeers: boolean
  /** As given, for interceptors. */
  readonly options: CallOptions
}

/** A pending waitForPeers(), or a call waiting for its peers. */
interface Waiter {
  up(name: string): void
  down(name: string): void
  /** A peer's join was refused: a waiter for it gives up if retrying cannot help. */
  refused(name: string, error: BilateralError): void
  settle(error?: Error): void
}

/** An address must be a ZeroMQ endpoint; `127.0.0.1:7000` is told to add `tcp://`. */
function checkEndpoint(address: unknown): asserts address is string {
  if (isEndpoint(address)) return
  const hint = typeof address === 'string' && /^[^/]*:\d+$|^[^/]*:\*$/.test(address) ? `; write tcp://${address}` : ''
  throw new BilateralError(
    'INVALID_ARGUMENT',
    `address ${describeValue(address)} is not a ZeroMQ endpoint such as tcp://127.0.0.1:7000 or tcp://127.0.0.1:*${hint}`,
  )
}

const CALL_OPTIONS: ReadonlySet<string> = new Set(['timeout', 'signal', 'meta', 'until', 'parent', 'detach', 'waitForPeers'])
const CAST_OPTIONS: ReadonlySet<string> = new Set(['meta', 'parent'])

/** What a selector addressing no member resolves to: no peer (an empty list means every active one). */
const NOBODY: readonly string[] = Object.freeze([])

/** A member selector (a plain object), as opposed to a list of peer names; a Set, a Map or the like is neither. */
function isSelector(to: unknown): to is MemberSelector {
  if (to === null || typeof to !== 'object' || Array.isArray(to)) return false
  const proto: unknown = Object.getPrototypeOf(to)
  return proto === Object.prototype || proto === null
}

const SELECTOR_KEYS: ReadonlySet<string> = new Set(['role', 'offers'])

/** A selector checked, as a copy read once (a getter answers once); INVALID_ARGUMENT naming what is wrong. */
function checkSelector(selector: MemberSelector): MemberSelector {
  const unknown = unknownOption(selector, SELECTOR_KEYS, 'a member selector', { roles: 'role', offer: 'offers', receiver: 'offers' })
  if (unknown !== undefined) throw new BilateralError('INVALID_ARGUMENT', unknown)
  const out: MemberSelector = {}
  for (const key of ['role', 'offers'] as const) {
    const value: unknown = selector[key]
    if (value === undefined) continue
    if (typeof value !== 'string' || value.length === 0 || value.length > 256) {
      throw new BilateralError('INVALID_ARGUMENT', `a member selector's ${key} must be a non-empty string (of at most 256 characters)`)
    }
    out[key] = value
  }
  return out
}

/** The receiver of `Receiver.Method`, which a selector naming neither role nor receiver looks for; INVALID_ARGUMENT for a method without one. */
function receiverOf(method: string): string {
  const dot = method.lastIndexOf('.')
  if (dot <= 0) {
    throw new BilateralError(
      'INVALID_ARGUMENT',
      `a member selector finds members by the method's receiver: ${clip(method, 64)} is not Receiver.Method`,
    )
  }
  return method.slice(0, dot)
}

const describeSelector = (s: MemberSelector): string =>
  [s.role === undefined ? '' : `with role ${JSON.stringify(s.role)}`, s.offers === undefined ? '' : `offering ${s.offers}`]
    .filter((x) => x !== '')
    .join(' and ') || 'at all'
const WAIT_OPTIONS: ReadonlySet<string> = new Set(['timeout'])
const SERVICE_OPTIONS: ReadonlySet<string> = new Set([...CALL_OPTIONS, 'peer', 'peers'])
const CALL_ALIASES = { callTimeout: 'timeout', deadline: 'timeout', abortSignal: 'signal', metadata: 'meta', headers: 'meta' }

/** `options` must be an options object of `where` (not a number put where options go) with no unknown keys: else a TypeError. */
function checkOptions(options: unknown, known: ReadonlySet<string>, where: string): void {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`the options of ${where} must be an object such as { timeout: 500 }, not ${describeValue(options)}`)
  }
  const unknown = unknownOption(options, known, where, CALL_ALIASES)
  if (unknown !== undefined) throw new TypeError(unknown)
}

/**
 * Refusals that retrying cannot fix: the peer is on another network, is not
 * the node named, refuses our key or we its, speaks another version or
 * another security (HANDSHAKE: plaintext meeting CURVE, a wrong key). A
 * limit (OVERLOADED), a timeout or a lost race (DUPLICATE) may pass.
 */
const FINAL_REFUSALS: ReadonlySet<string> = new Set([
  'NETWORK_MISMATCH',
  'WRONG_NAME',
  'AUTH',
  'HANDSHAKE',
  'VERSION',
  'LOOPBACK',
  'PROTOCOL',
])

/** What outbound observers are told when a later interceptor refuses `call`: each peer's result is that refusal. */
function refusedOutbound(call: OutboundCall, observers: readonly OutboundResult[], thrown: unknown): void {
  const error =
    thrown instanceof BilateralError
      ? thrown
      : new BilateralError('INVALID_ARGUMENT', `an interceptor refused the call: ${String((thrown as Error)?.message ?? thrown)}`, {
          cause: thrown,
        })
  for (const peer of call.to) report(observers, { from: peer, ok: false, error }, 0, 0, call)
}

/** waitForPeers' error for a peer refused for good. */
function finalRefusal(name: string, error: BilateralError): BilateralError {
  return new BilateralError(error.code, `${name} was refused, and retrying will not change that (${error.code}): ${error.message}`, {
    peer: name,
    cause: error,
  })
}

/** A logging function for this node, or undefined (then nothing is built): a throwing logger must not stop the node. */
function logTo(logger: Logger | undefined, node: string): ((level: LogLevel, message: string, fields: object) => void) | undefined {
  if (logger === undefined) return undefined
  return (level, message, fields) => {
    try {
      logger[level]({ node, ...fields }, message)
    } catch {
      // A logger's own failure is not the node's.
    }
  }
}

/** A `parent` option must be a handler's `ctx`: its deadline and signal are trusted. */
function checkParent(parent: unknown): Context {
  if (!(parent instanceof Context)) throw new TypeError("parent must be a handler's ctx")
  return parent
}

/**
 * An onward call's timeout from what is left of its parent's: rounded down,
 * to 10 ms above 100 ms, so that nested calls share the call table's timer
 * queues (one per distinct timeout) rather than each making its own.
 */
const inherited = (left: number): number => (left >= 100 ? Math.floor(left / 10) * 10 : Math.floor(left))

function closedError(): BilateralError {
  return new BilateralError('CLOSED', 'the node is closed')
}

/**
 * A node's incarnation (PROTOCOL.md 9): 8 bytes of its start time in ms
 * (big-endian, so a later run compares greater) and 8 random bytes.
 */
function incarnation(): Uint8Array {
  const out = new Uint8Array(16)
  new DataView(out.buffer).setBigUint64(0, BigInt(Date.now()))
  out.set(randomBytes(8), 8)
  return out
}

export type { CallResult, CallContext, CallOptions, CastOptions, Meta }
