/**
 * The public node: listen, connect, register receivers, call and cast.
 */
import { EventEmitter } from 'node:events'
import { systemClock, type Clock } from './clock.js'
import { Codec, FrameType, encodeBody, encodeCall, encodeCast, encodeError, encodeReply } from './codec.js'
import { BilateralError, RemoteError } from './errors.js'
import { checkJoinProof, derivePublicKey, isZ85Key, makeJoinProof } from './crypto.js'
import { z85Encode } from './z85.js'
import { Mesh, type DataFrame, type DownReason, type Identity, type Link } from './mesh.js'
import { checkName, checkTimeout, resolveOptions, type BilateralOptions, type ResolvedOptions } from './options.js'
import { PendingCalls, type CallResult } from './pending.js'
import { Registry, toPredicate, type CallContext, type RegisterOptions } from './registry.js'

export interface CallOptions {
  /** How long to wait for replies, ms. Default: the node's `callTimeout` (2000). */
  timeout?: number
}

export interface WaitOptions {
  /** How long to wait, ms. Default: the node's `callTimeout` (2000). */
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
  /** A message from a peer was dropped (undecodable, unknown frame). */
  'frame:dropped': [error: BilateralError]
  /** Encrypted nodes: a key outside `authorizedKeys` tried to connect and was refused during the handshake. */
  'auth:rejected': [publicKey: string]
  /** A ZeroMQ handshake on our listening socket failed; `error.code` is `AUTH` or `HANDSHAKE`. */
  'handshake:error': [error: BilateralError]
}

export class Bilateral extends EventEmitter<BilateralEvents> {
  /** This node's name. */
  readonly name: string
  /** This node's network name. */
  readonly network: string
  private readonly options: ResolvedOptions
  private readonly registry: Registry
  private readonly pending: PendingCalls
  private readonly codec = new Codec()
  private readonly mesh: Mesh
  private closed = false
  private readonly waiters = new Set<Waiter>()
  /** Calls outstanding per peer (for maxInflight). */
  private readonly inflight = new Map<string, number>()
  /** Handlers running for remote callers (for maxConcurrent). */
  private running = 0
  /**
   * Characters of a handler error's name and message sent to the caller, so
   * that an ERROR envelope stays within maxMessageSize (at most 3 bytes a
   * character: a fifth and a twentieth of it, with room for the rest).
   */
  private readonly errorMessage: number
  private readonly errorName: number

  /** @param clock for tests only: the time source of every timer. */
  constructor(options: BilateralOptions, clock: Clock = systemClock) {
    super()
    this.options = resolveOptions(options)
    this.name = this.options.name
    this.network = this.options.network
    this.errorMessage = Math.min(16 * 1024, Math.floor(this.options.maxMessageSize / 5))
    this.errorName = Math.min(256, Math.floor(this.options.maxMessageSize / 20))
    this.registry = new Registry(this.options.defaultExposure)
    this.pending = new PendingCalls(clock, (peer) => {
      const n = (this.inflight.get(peer) ?? 1) - 1
      if (n === 0) this.inflight.delete(peer)
      else this.inflight.set(peer, n)
    })
    this.mesh = new Mesh(
      this.options,
      clock,
      {
        up: (peer) => {
          for (const waiter of [...this.waiters]) waiter.up(peer)
          this.emit('peer:up', peer)
        },
        down: (peer, reason) => {
          // A peer that left, restarted or lost its connection will not answer; one that stalled (TIMEOUT) might yet.
          if (reason !== 'TIMEOUT' && reason !== 'CLOSED') this.pending.failPeer(peer, 'PEER_DOWN', `${peer} is down (${reason})`)
          for (const waiter of this.waiters) waiter.down(peer)
          this.emit('peer:down', peer, reason)
        },
        refused: (peer, error) => this.emit('peer:refused', peer, error),
        data: (peer, frame, link) => this.onData(peer, frame, link),
        dropped: (error) => this.emit('frame:dropped', error),
        handshakeFailed: (error) => this.emit('handshake:error', error),
        unsent: (peer, ids) => {
          for (const id of ids)
            this.pending.fail(
              id,
              peer,
              new BilateralError('NOT_CONNECTED', `could not send to ${peer}: its queue is full or its link closed`, { peer }),
            )
        },
      },
      this.identity(),
    )
  }

  /** Whether this node encrypts its traffic (it was given a keypair). */
  get encrypted(): boolean {
    return this.options.keypair !== undefined
  }

  private identity(): Identity | undefined {
    const keys = this.options.keypair
    if (keys === undefined) return undefined
    if (derivePublicKey(keys.secretKey) !== keys.publicKey) {
      throw new BilateralError('INVALID_ARGUMENT', 'option keypair: publicKey does not belong to secretKey')
    }
    const { network } = this.options
    const authorized = toPredicate(this.options.authorizedKeys ?? (() => true))
    // Keys we dial are trusted for the connection we asked for, whichever side opens it.
    const allows = (key: string): boolean => authorized(key) || this.mesh.isDialling(key)
    return {
      publicKey: keys.publicKey,
      secretKey: keys.secretKey,
      proveTo: (peer) => makeJoinProof(network, keys.secretKey, peer),
      // The claimed name must be admissible too: holding an allowed key and
      // another key's secret must not let that other key in.
      verify: (claimed, proof) => allows(claimed) && checkJoinProof(proof, network, claimed, keys.secretKey),
      admits: (raw) => {
        const key = z85Encode(raw)
        if (allows(key)) return true
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
    if (typeof address !== 'string') throw new BilateralError('INVALID_ARGUMENT', 'address must be a string')
    // A port released by a socket that just closed is freed a moment later by
    // libzmq's I/O thread; retry an address in use briefly before giving up.
    const giveUp = performance.now() + BIND_RETRY_MS
    for (;;) {
      try {
        return await this.mesh.listen(address)
      } catch (error) {
        const inUse = (error as { code?: unknown }).code === 'EADDRINUSE'
        if (!inUse || performance.now() >= giveUp || this.closed) {
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
  register(receiver: object, name?: string, options?: RegisterOptions): string[] {
    this.assertOpen()
    return this.registry.register(receiver, name, options)
  }

  /**
   * Dial peer `name` at `address` and keep the connection up (rejoining with
   * back-off) until `disconnect(name)` or `close()`. Returns at once.
   * Throws `LOOPBACK` (our own name), `ALREADY_CONNECTED`, `INVALID_ARGUMENT`,
   * `SOCKET` (no socket could be made, e.g. out of file descriptors).
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
    if (typeof address !== 'string' || !/^[a-z]+:\/\/./.test(address)) {
      throw new BilateralError('INVALID_ARGUMENT', `address ${JSON.stringify(address)} is not a ZeroMQ endpoint such as tcp://host:port`)
    }
    this.mesh.dial(name, address)
  }

  /**
   * Stop dialling `name`; if the live link to it is the one we dialled, part it
   * (the peer sees PART at once). Pending calls to it fail with `PEER_DOWN`.
   * Rejects with `NOT_CONNECTED` if we never connected to `name`.
   */
  async disconnect(name: string): Promise<void> {
    this.assertOpen()
    if (!this.mesh.isDialling(name)) throw new BilateralError('NOT_CONNECTED', `not connected to ${name}`, { peer: name })
    this.mesh.stop(name)
  }

  /**
   * Resolve once every peer in `names` is active. Rejects with `TIMEOUT`
   * (naming the missing ones) or `CLOSED`.
   */
  waitForPeers(names: readonly string[], options: WaitOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(closedError())
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
      return Promise.reject(new TypeError('names must be an array of strings'))
    }
    const timeout = options.timeout === undefined ? this.options.callTimeout : checkTimeout(options.timeout)
    const missing = new Set(names.filter((name) => this.mesh.linkTo(name) === undefined))
    if (missing.size === 0) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        up: (name) => {
          missing.delete(name)
          if (missing.size === 0) waiter.settle()
        },
        down: (name) => {
          if (names.includes(name)) missing.add(name)
        },
        settle: (error) => {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          if (error === undefined) resolve()
          else reject(error)
        },
      }
      const timer = setTimeout(() => {
        waiter.settle(new BilateralError('TIMEOUT', `peers not active after ${timeout} ms: ${[...missing].join(', ')}`))
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

  /** Number of active peers. */
  connectionCount(): number {
    return this.mesh.activeNames().length
  }

  /**
   * Call `method` on each peer in `to` (every active peer if empty) and gather
   * one {@link CallResult} per peer: replies first in arrival order, then
   * errors (`REMOTE`, `NO_SUCH_METHOD`, `NOT_CONNECTED`, `TIMEOUT`,
   * `PEER_DOWN`, `CLOSED`). Resolves as soon as every peer has answered.
   * Rejects with a TypeError for a bad timeout or arguments msgpack cannot
   * carry, with `TOO_LARGE` for arguments or a method name beyond `maxMessageSize`, and with `CLOSED` after `close()`.
   */
  call<R = unknown>(to: readonly string[] = [], method: string, args?: unknown, options: CallOptions = {}): Promise<CallResult<R>[]> {
    try {
      this.assertOpen()
      const timeout = options.timeout === undefined ? this.options.callTimeout : checkTimeout(options.timeout)
      this.checkMethod(method)
      const body = this.encodeWithin(args)
      const site: { stack?: string } = {}
      if (this.options.callerStacks) Error.captureStackTrace(site, this.call)
      const early: CallResult[] = []
      const { names, links } = this.targets(to, early, this.options.maxInflight)
      const id = this.pending.allocateId()
      const promise = new Promise<CallResult[]>((resolve) => this.pending.add(id, names, timeout, early, site, resolve))
      if (names.length > 0) {
        const frame = [encodeCall(id, method), body]
        for (let i = 0; i < names.length; i++) {
          const peer = names[i]!
          this.inflight.set(peer, (this.inflight.get(peer) ?? 0) + 1)
          links[i]!.post(frame, id)
        }
      }
      return promise as Promise<CallResult<R>[]>
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Send `method(args)` to each peer in `to` (every active peer if empty)
   * without waiting for any reply. Resolves to the names it was queued for;
   * named peers that are not active are left out.
   */
  async cast(to: readonly string[] = [], method: string, args?: unknown): Promise<string[]> {
    this.assertOpen()
    this.checkMethod(method)
    const body = this.encodeWithin(args)
    const envelope = encodeCast(method)
    const { names, links } = this.targets(to, [])
    const frame = [envelope, body]
    for (const link of links) link.post(frame)
    const sent = await Promise.all(links.map((link) => link.whenFlushed()))
    return names.filter((_, i) => sent[i])
  }

  /**
   * Part from every peer, settle pending calls with `CLOSED`, close every
   * socket and timer. Late results of running handlers are discarded.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.pending.failAll('CLOSED', 'the node was closed')
    // Handlers still running are no longer ours to count; their results are dropped.
    this.running = 0
    for (const waiter of [...this.waiters]) waiter.settle(closedError())
    await this.mesh.close()
  }

  /**
   * Sizes of internal tables, all zero after close() (for leak checks), and
   * `dropped`: how many messages from peers were dropped because they did not
   * decode (each also reported as `frame:dropped`).
   */
  stats(): { pending: number; timerQueues: number; inflight: number; running: number; peers: number; inbound: number; dropped: number } {
    return {
      pending: this.pending.size,
      timerQueues: this.pending.queueCount,
      inflight: this.inflight.size,
      running: this.running,
      ...this.mesh.stats(),
    }
  }

  // --- internals -------------------------------------------------------------

  /** Resolve `to` into live links; NOT_CONNECTED (and, given `limit`, OVERLOADED) entries go to `early`. */
  private targets(to: readonly string[], early: CallResult[], limit = Infinity): { names: string[]; links: Link[] } {
    if (!Array.isArray(to)) throw new TypeError('to must be an array of peer names')
    const names: string[] = []
    const links: Link[] = []
    const all = to.length === 0
    const wanted = all ? this.mesh.activeNames() : to
    // Names are unique when we list the active peers; a caller's list may repeat one (a Set only for long lists).
    const seen = all || wanted.length < 16 ? undefined : new Set<string>()
    for (const name of wanted) {
      if (typeof name !== 'string') throw new TypeError('to must be an array of peer names')
      if (!all && (seen === undefined ? names.includes(name) || early.some((e) => e.from === name) : seen.has(name))) continue
      seen?.add(name)
      const link = this.mesh.linkTo(name)
      if (link === undefined) {
        early.push({ from: name, ok: false, error: new BilateralError('NOT_CONNECTED', `${name} is not connected`, { peer: name }) })
      } else if ((this.inflight.get(name) ?? 0) >= limit) {
        const error = new BilateralError('OVERLOADED', `${limit} calls to ${name} are already outstanding (maxInflight)`, { peer: name })
        early.push({ from: name, ok: false, error })
      } else {
        names.push(name)
        links.push(link)
      }
    }
    return { names, links }
  }

  private onData(peer: string, frame: DataFrame, link: Link): void {
    switch (frame.type) {
      case FrameType.CALL:
        return this.serve(peer, frame.method, frame.body, link, frame.id)
      case FrameType.CAST:
        return this.serve(peer, frame.method, frame.body, link, undefined)
      case FrameType.REPLY:
        if (!this.pending.isWaitingFor(frame.id, peer)) return
        try {
          this.pending.reply(frame.id, peer, this.codec.decodeBody(frame.body))
        } catch (error) {
          this.pending.fail(frame.id, peer, new BilateralError('BAD_REPLY', `undecodable reply from ${peer}`, { peer, cause: error }))
        }
        return
      case FrameType.ERROR: {
        const error =
          frame.code === 'REMOTE'
            ? new RemoteError(peer, frame.name, frame.message, frame.remoteCode)
            : new BilateralError(frame.code, frame.message, { peer })
        this.pending.fail(frame.id, peer, error)
        return
      }
    }
  }

  /** Run a handler for a CALL (`id` set) or a CAST, and answer a CALL on `link`. */
  private serve(peer: string, method: string, body: Uint8Array, link: Link, id: number | undefined): void {
    const handler = this.registry.lookup(method, peer)
    if (handler === undefined) return this.refuse(peer, method, link, id, 'NO_SUCH_METHOD', `no method ${method}`)
    let args: unknown
    try {
      args = this.codec.decodeBody(body)
    } catch (error) {
      return this.refuse(peer, method, link, id, 'BAD_REQUEST', `undecodable arguments for ${method}: ${(error as Error).message}`, error)
    }
    if (this.running >= this.options.maxConcurrent) {
      return this.refuse(peer, method, link, id, 'OVERLOADED', `${this.running} handlers are already running (maxConcurrent)`)
    }
    this.running++
    const ctx: CallContext = { from: peer, method, cast: id === undefined }
    let result: unknown
    try {
      result = handler(args, ctx)
    } catch (error) {
      return this.raised(ctx, link, id, error)
    }
    // Closures only for a handler that answers later; most answer at once.
    if (isThenable(result)) {
      result.then(
        (value) => this.succeeded(ctx, link, id, value),
        (error) => this.raised(ctx, link, id, error),
      )
    } else this.succeeded(ctx, link, id, result)
  }

  /** A handler returned `result` (or its promise resolved to it): answer a CALL. */
  private succeeded(ctx: CallContext, link: Link, id: number | undefined, result: unknown): void {
    // After close() the count restarted at zero and late results are dropped.
    if (this.closed) return
    this.running--
    if (id === undefined) return
    let encoded: Uint8Array
    try {
      encoded = this.encodeWithin(result, ctx.method)
    } catch (error) {
      if (error instanceof BilateralError) return this.refuse(ctx.from, ctx.method, link, id, error.code, error.message)
      const message = `the result of ${ctx.method} cannot be encoded: ${(error as Error).message}`
      return this.refuse(ctx.from, ctx.method, link, id, 'BAD_REPLY', message)
    }
    this.answer(ctx.from, link, [encodeReply(id), encoded])
  }

  /** A handler threw or rejected: answer a CALL with REMOTE, report a CAST. */
  private raised(ctx: CallContext, link: Link, id: number | undefined, error: unknown): void {
    if (this.closed) return
    this.running--
    const e = error instanceof Error ? error : new Error(String(error))
    if (id === undefined) this.emit('cast:error', error ?? new BilateralError('REMOTE', e.message, { peer: ctx.from }), ctx)
    else
      this.answer(ctx.from, link, [
        encodeError(id, 'REMOTE', clip(String(e.name), this.errorName), clip(String(e.message), this.errorMessage), ownCode(error)),
      ])
  }

  /** A CALL that cannot be served is answered ERROR `code`; a CAST that cannot is reported (`cast:error`). */
  private refuse(peer: string, method: string, link: Link, id: number | undefined, code: string, message: string, cause?: unknown): void {
    if (id === undefined) this.emit('cast:error', cause ?? new BilateralError(code, message, { peer }), { from: peer, method, cast: true })
    else this.answer(peer, link, [encodeError(id, code, 'BilateralError', message)])
  }

  /** A method name that fits in an envelope a peer with our maxMessageSize accepts. */
  private checkMethod(method: unknown): asserts method is string {
    if (typeof method !== 'string' || method.length === 0) throw new TypeError('method must be a non-empty string')
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most names need no counting.
    if (3 * method.length + ENVELOPE_OVERHEAD <= this.options.maxMessageSize) return
    const size = Buffer.byteLength(method) + ENVELOPE_OVERHEAD
    if (size > this.options.maxMessageSize)
      throw new BilateralError('TOO_LARGE', tooLarge('the method name', size, this.options.maxMessageSize))
  }

  /**
   * Encode call arguments, or the result of `method` when given. Beyond
   * `maxMessageSize` it is refused here (TOO_LARGE): a peer with the same
   * limit would have ZeroMQ close the whole connection on such a message.
   * What msgpack cannot carry throws a TypeError.
   */
  private encodeWithin(value: unknown, method?: string): Uint8Array {
    const body = encodeBody(value)
    if (body.byteLength > this.options.maxMessageSize) {
      const what = method === undefined ? 'the arguments' : `the result of ${method}`
      throw new BilateralError('TOO_LARGE', tooLarge(what, body.byteLength, this.options.maxMessageSize))
    }
    return body
  }

  /** Reply on the peer's current link, or on the one the call came in on if the peer is between links. */
  private answer(peer: string, link: Link, parts: Uint8Array[]): void {
    if (!this.closed) (this.mesh.linkTo(peer) ?? link).post(parts)
  }

  private assertOpen(): void {
    if (this.closed) throw closedError()
  }
}

/** Bytes of a CALL or CAST envelope besides the method name (array, version, type, call id, string header). */
const ENVELOPE_OVERHEAD = 16
const clip = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max)}…` : text)

const tooLarge = (what: string, size: number, limit: number): string =>
  `${what} encode to ${size} bytes, more than maxMessageSize (${limit})`

/** How long listen() retries an address in use, ms. */
const BIND_RETRY_MS = 500

/** A pending waitForPeers(). */
interface Waiter {
  up(name: string): void
  down(name: string): void
  settle(error?: Error): void
}

function closedError(): BilateralError {
  return new BilateralError('CLOSED', 'the node is closed')
}

/** A thrown error's own string `code` (as Node's and many libraries' errors have). */
function ownCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code
  return typeof code === 'string' && code.length <= 64 ? code : undefined
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as { then?: unknown }).then === 'function'
}

export type { CallResult, CallContext }
