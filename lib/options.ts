import { BilateralError } from './errors.js'
import { INTROSPECTION_METHODS, type IntrospectionOptions } from './introspection.js'
import { isLogger, lineLogger, wantsDebug, type Logger } from './log.js'
import { unknownOption } from './misuse.js'
import type { PeerRule } from './calls/registry.js'
import { DEFAULT_FORWARD_META, MAX_META_BYTES, META_KEY } from './calls/meta.js'
import { MAX_ADDRESSES, MAX_ADDRESS_BYTES, MAX_ROLES, MAX_ROLE_BYTES, isAddress, isRole } from './membership/records.js'
import { MAX_SEEDS, parseSeed } from './membership/seeds.js'

export { isEndpoint } from './membership/records.js'

/** Default per-call timeout, ms. */
export const DEFAULT_CALL_TIMEOUT = 2000
export const DEFAULT_GOSSIP_INTERVAL = 1000
/** Default interval between TICKs sent by the dialling side, ms. */
export const DEFAULT_PING_INTERVAL = 2000
/** Default silence after which an active peer is declared down, ms. */
export const DEFAULT_PEER_TIMEOUT = 6000
/** Default time a peer whose connection is alive may leave our pings unanswered (its event loop busy) before it is declared down, ms. */
export const DEFAULT_STALL_TIMEOUT = 60_000
/** Default interval between JOIN re-sends while a dialled peer stays silent, ms. */
export const DEFAULT_JOIN_INTERVAL = 1000
/** Default first back-off after a refused join or a lost peer, ms. */
export const DEFAULT_RECONNECT_MIN = 100
/** Default cap of the exponential back-off, ms. */
export const DEFAULT_RECONNECT_MAX = 5000
/** Default time a closed socket keeps trying to deliver queued frames (such as PART), ms. */
export const DEFAULT_LINGER = 200
/** Default most calls outstanding to one peer. */
export const DEFAULT_MAX_INFLIGHT = 10_000
/** Default most handlers running at once for remote callers. */
export const DEFAULT_MAX_CONCURRENT = 1_000
/** Default largest ZeroMQ message accepted, bytes (16 MiB). */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
/** Default time a connection has to join before it is ignored, ms. */
export const DEFAULT_JOIN_TIMEOUT = 5000
/** Default most inbound connections at once. */
export const DEFAULT_MAX_CONNECTIONS = 1024
/** Default most inbound connections at once from one IP address. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256
/** Default most joined peers. */
export const DEFAULT_MAX_PEERS = 1024
/** Default most bytes of arguments held by handlers running for remote callers (64 MiB). */
export const DEFAULT_MAX_CONCURRENT_BYTES = 64 * 1024 * 1024
/** Default most bytes queued between this node and one peer, each way (64 MiB). */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
/** Default `maxMetaBytes`: 8 KiB of encoded metadata a call. */
export const DEFAULT_MAX_META_BYTES = 8 * 1024
/** The longest time a timer can wait (Node's setTimeout takes a signed 32-bit count of ms). */
export const MAX_TIMER = 2 ** 31 - 1

/** Options of `new Bilateral(...)`. Every time is in milliseconds. */
export interface BilateralOptions {
  /** Network name; peers with another network never become active. Required. */
  network: string
  /** This node's name, 1–255 UTF-8 bytes. Required for a plaintext node; an encrypted node's name is its public key. */
  name?: string
  /**
   * CURVE keys (40-character Z85, from `generateKeypair()` or `bilateral-keygen`).
   * With them the node is encrypted: all its traffic uses CURVE and its name is `publicKey`.
   */
  keypair?: { publicKey: string; secretKey: string }
  /**
   * Encrypted nodes only: the public keys allowed to connect to us, as a list or a predicate.
   * Keys we `connect()` to are always allowed. Default: any key.
   */
  authorizedKeys?: PeerRule
  /** Who may call receivers registered without `peers`: a list of names/keys or a predicate. Default: every peer. */
  defaultExposure?: PeerRule
  /** Default timeout of `call()`, ms. Default 2000. */
  callTimeout?: number
  /** Interval between pings (TICKs on connections this node dialled; ZeroMQ heartbeats go every `peerTimeout` / 2), ms. Default 2000. */
  pingInterval?: number
  /**
   * How soon a dead connection (a killed process, a cut cable) is detected, ms:
   * ZeroMQ heartbeats, answered by libzmq's own thread even while a peer's
   * JavaScript is busy, close a connection silent for this long, and the peer
   * goes down with reason HEARTBEAT. Default 6000. At least 2 × `pingInterval`.
   */
  peerTimeout?: number
  /**
   * How long a peer whose connection is alive may leave our pings unanswered
   * (a handler blocking its event loop) before it is declared down with
   * reason TIMEOUT, ms. Default 60000. At least `peerTimeout`.
   */
  stallTimeout?: number
  /** Wait before re-sending JOIN to a dialled peer that does not answer, ms (longer while this node's JOINs take longer to be answered, up to joinTimeout / 4); each further re-send on one connection waits twice as long, up to 4 ×. Default 1000. */
  joinInterval?: number
  /** First back-off after a refused join or a lost peer (also ZeroMQ's reconnect interval), ms. Default 100. */
  reconnectMin?: number
  /** Cap of the exponential back-off, ms. Default 5000. */
  reconnectMax?: number
  /** How long a closing socket stays open for the PART it just sent, ms; close() resolves within it (sooner once the peers that dialled us hang up). Default 200. */
  linger?: number
  /** Largest ZeroMQ message accepted from a peer, bytes. Default 16 MiB. */
  maxMessageSize?: number
  /**
   * Record the stack of each `call()` so a TIMEOUT or REMOTE error points at
   * the calling code. Default false: the capture costs about a third of
   * throughput with 100 calls in flight. Turn it on while debugging.
   */
  callerStacks?: boolean
  /** Most calls this node may have outstanding to one peer; beyond it a call gets OVERLOADED for that peer at once. Default 10000. */
  maxInflight?: number
  /**
   * Most handlers running at once for remote callers; beyond it a call is
   * answered OVERLOADED (a cast is dropped, cast:error). Each peer gets a
   * fair share: while `n` peers have handlers running, one may run at most
   * `(maxConcurrent − maxConcurrent/16) / n`, so a flood from one leaves room
   * for the others. Default 1000.
   */
  maxConcurrent?: number
  /**
   * Most bytes of (encoded) arguments held by handlers running for remote
   * callers, shared the same way; a call beyond it is answered OVERLOADED
   * before its arguments are decoded. At least `maxMessageSize`. Default 64 MiB.
   */
  maxConcurrentBytes?: number
  /**
   * Most bytes queued between this node and one peer, each way: the window
   * it announces (a peer of this release sends no more before we have read
   * it), and what it holds for a peer that is not reading before new calls to
   * it are OVERLOADED. At least `maxMessageSize`, at most 4294967295. Default 64 MiB.
   */
  maxQueuedBytes?: number
  /** A connection that has not joined within this is ignored (its peer is told TIMEOUT once), ms. Default 5000. */
  joinTimeout?: number
  /** Most inbound connections at once; more are refused during the handshake. Default 1024. */
  maxConnections?: number
  /** Most inbound connections at once from one IP address. Default 256. */
  maxConnectionsPerAddress?: number
  /** Most joined peers; a JOIN beyond it is refused (PART OVERLOADED). Default 1024. */
  maxPeers?: number
  /**
   * Encrypted nodes: also accept the static JOIN proof of earlier releases,
   * which can be replayed by whoever obtains its bytes. Only while a mesh is
   * being upgraded. Default false.
   */
  legacyJoinProofs?: boolean
  /**
   * Most bytes a call's metadata (`meta`) may encode to, as msgpack: ours are
   * refused locally with TOO_LARGE beyond it, a peer's are answered
   * BAD_REQUEST. 0 to 65536. Default 8192.
   */
  maxMetaBytes?: number
  /**
   * The metadata keys a handler's onward calls (`ctx.call()`) carry over from
   * the call it serves. Default: the W3C trace context keys, `traceparent`,
   * `tracestate` and `baggage`.
   */
  forwardMeta?: readonly string[]
  /**
   * Where the node logs what it does (peers up, down and refused, dial
   * attempts and back-off, handshake failures, dropped frames, refused
   * calls): any object with `debug`, `info`, `warn` and `error` taking
   * `(fields, message)`, as pino, bunyan and `console` do. Payloads are never
   * logged. Default: silent, unless the environment has `DEBUG=bilateral` or
   * `NODE_DEBUG=bilateral`, which log to stderr.
   */
  logger?: Logger
  /**
   * What this node serves about itself under the reserved receiver `$node`,
   * and to whom: `{ methods, peers }`, or `false` for nothing. Default:
   * `Ping`, `Info` (name, network, release, uptime, addresses, and the
   * receivers and methods the caller may call) and `Health`, to the peers
   * `defaultExposure` allows; `Peers` and `Stats` only when listed.
   */
  introspection?: IntrospectionOptions
  /**
   * Count calls both ways, per method and per peer (outcomes by code,
   * latency histogram, in flight, bytes): read by `metrics()`,
   * `metricsText()` (Prometheus) and `$node.Stats`. Default false, and then
   * calls pay nothing for it.
   */
  metrics?: boolean
  /**
   * Join a mesh that forms itself: the addresses of members to ask first
   * (any one that answers is enough; `[]` for the first member). With it
   * the node keeps a table of members by gossip and connects to each, and
   * `members()` shows them. A host may be a name (every address it
   * resolves to is tried); on an encrypted node each seed is
   * `KEY@endpoint`. Default: off.
   */
  seeds?: readonly string[]
  /** The addresses members are told to reach us at, instead of the ones we listen on (binding 0.0.0.0, NAT). At most 8. */
  advertise?: readonly string[]
  /** How often membership compares tables with two random members, ms. Default 1000. */
  gossipInterval?: number
  /**
   * What this node is for (at most 16, each 1 to 64 bytes): members call it
   * by role, `call({ role: 'indexer' }, ...)`, and `$node.Info` shows them.
   */
  roles?: readonly string[]
  /**
   * How a seed's host name becomes addresses (IPv4 or IPv6 literals), each
   * tried; called again each time the seed is due. Default: the system's
   * resolver (`dns.lookup`, every address). Inject one for tests, or for a
   * service registry.
   */
  resolver?: (host: string) => Promise<readonly string[]>
}

/** What joinMesh() takes with its seeds, as the options of the same names do for a node made with `seeds`. */
export type JoinMeshOptions = Pick<BilateralOptions, 'advertise' | 'resolver'>

export type ResolvedOptions = Required<
  Omit<BilateralOptions, 'keypair' | 'authorizedKeys' | 'defaultExposure' | 'logger' | 'seeds' | 'advertise' | 'roles' | 'resolver'>
> &
  Pick<BilateralOptions, 'keypair' | 'authorizedKeys' | 'defaultExposure' | 'logger' | 'seeds' | 'advertise' | 'resolver'> & {
    roles: readonly string[]
  }

/** Merge `options` with the defaults and validate every field, naming the one at fault. */
export function resolveOptions(options: BilateralOptions): ResolvedOptions {
  if (options === null || typeof options !== 'object') {
    throw invalid('options', 'must be an object')
  }
  const unknown = unknownOption(options, OPTION_NAMES, 'new Bilateral()', OPTION_ALIASES)
  if (unknown !== undefined) throw new BilateralError('INVALID_ARGUMENT', unknown)
  const keypair = options.keypair
  if (keypair !== undefined) {
    if (keypair === null || typeof keypair !== 'object' || !isKey(keypair.publicKey) || !isKey(keypair.secretKey)) {
      throw invalid('keypair', 'must be { publicKey, secretKey } as 40-character Z85 strings')
    }
    if (options.name !== undefined && options.name !== keypair.publicKey) {
      throw invalid('name', 'of an encrypted node is its public key; leave it out')
    }
  } else if (options.authorizedKeys !== undefined) {
    throw invalid('authorizedKeys', 'needs a keypair: only encrypted nodes can check keys')
  }
  const resolved: ResolvedOptions = {
    network: options.network,
    name: keypair?.publicKey ?? (options.name as string),
    keypair,
    authorizedKeys: options.authorizedKeys,
    defaultExposure: options.defaultExposure,
    callTimeout: options.callTimeout ?? DEFAULT_CALL_TIMEOUT,
    pingInterval: options.pingInterval ?? DEFAULT_PING_INTERVAL,
    peerTimeout: options.peerTimeout ?? DEFAULT_PEER_TIMEOUT,
    stallTimeout: options.stallTimeout ?? Math.max(DEFAULT_STALL_TIMEOUT, options.peerTimeout ?? 0),
    joinInterval: options.joinInterval ?? DEFAULT_JOIN_INTERVAL,
    reconnectMin: options.reconnectMin ?? DEFAULT_RECONNECT_MIN,
    reconnectMax: options.reconnectMax ?? DEFAULT_RECONNECT_MAX,
    linger: options.linger ?? DEFAULT_LINGER,
    maxMessageSize: options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    callerStacks: options.callerStacks ?? false,
    maxInflight: options.maxInflight ?? DEFAULT_MAX_INFLIGHT,
    maxConcurrent: options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT,
    maxConcurrentBytes: options.maxConcurrentBytes ?? Math.max(DEFAULT_MAX_CONCURRENT_BYTES, options.maxMessageSize ?? 0),
    maxQueuedBytes: options.maxQueuedBytes ?? Math.min(Math.max(DEFAULT_MAX_QUEUED_BYTES, options.maxMessageSize ?? 0), 0xffff_ffff),
    joinTimeout: options.joinTimeout ?? DEFAULT_JOIN_TIMEOUT,
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress ?? DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    maxPeers: options.maxPeers ?? DEFAULT_MAX_PEERS,
    legacyJoinProofs: options.legacyJoinProofs ?? false,
    maxMetaBytes: options.maxMetaBytes ?? DEFAULT_MAX_META_BYTES,
    forwardMeta: options.forwardMeta ?? DEFAULT_FORWARD_META,
    logger: options.logger ?? (wantsDebug() ? lineLogger() : undefined),
    introspection: options.introspection === undefined ? {} : options.introspection,
    metrics: options.metrics ?? false,
    seeds: options.seeds,
    advertise: options.advertise,
    gossipInterval: options.gossipInterval ?? DEFAULT_GOSSIP_INTERVAL,
    roles: options.roles ?? [],
    resolver: options.resolver,
  }
  checkMembership(resolved)
  checkIntrospection(resolved.introspection)
  if (resolved.logger !== undefined && !isLogger(resolved.logger)) {
    throw invalid('logger', 'must have debug, info, warn and error methods (pino, bunyan and console do)')
  }
  checkName('network', resolved.network)
  checkName('name', resolved.name)
  for (const key of [
    'callTimeout',
    'pingInterval',
    'peerTimeout',
    'stallTimeout',
    'joinInterval',
    'reconnectMin',
    'reconnectMax',
    'joinTimeout',
  ] as const) {
    checkTime(key, resolved[key])
  }
  if (!Number.isInteger(resolved.linger) || resolved.linger < 0 || resolved.linger > MAX_TIMER) {
    throw invalid('linger', `must be an integer from 0 to ${MAX_TIMER}`)
  }
  checkInteger('maxMessageSize', resolved.maxMessageSize, 1024, Number.MAX_SAFE_INTEGER)
  for (const key of ['maxInflight', 'maxConcurrent', 'maxConnections', 'maxConnectionsPerAddress', 'maxPeers'] as const) {
    checkInteger(key, resolved[key], 1, 2 ** 31)
  }
  checkInteger('maxConcurrentBytes', resolved.maxConcurrentBytes, resolved.maxMessageSize, Number.MAX_SAFE_INTEGER, '(maxMessageSize)')
  checkInteger('maxQueuedBytes', resolved.maxQueuedBytes, Math.min(resolved.maxMessageSize, 0xffff_ffff), 0xffff_ffff, '(maxMessageSize)')
  for (const key of ['callerStacks', 'legacyJoinProofs', 'metrics'] as const) {
    if (typeof resolved[key] !== 'boolean') throw invalid(key, 'must be a boolean')
  }
  checkInteger('maxMetaBytes', resolved.maxMetaBytes, 0, MAX_META_BYTES)
  const forward: unknown = resolved.forwardMeta
  if (!Array.isArray(forward) || !forward.every((key) => typeof key === 'string' && META_KEY.test(key))) {
    throw invalid('forwardMeta', 'must be an array of metadata keys (1 to 64 of a-z 0-9 . _ -)')
  }
  // A TICK needs at least a ping interval to be answered in, and a ZMTP heartbeat gets peerTimeout / 2.
  if (resolved.peerTimeout < 2 * resolved.pingInterval) throw related(options, resolved, 'peerTimeout', 'at least 2 ×', 'pingInterval')
  if (resolved.peerTimeout > 6_553_500) throw invalid('peerTimeout', 'must be at most 6553500 (about 1.8 hours)')
  if (resolved.stallTimeout < resolved.peerTimeout) throw related(options, resolved, 'stallTimeout', 'at least', 'peerTimeout')
  if (resolved.reconnectMax < resolved.reconnectMin) throw related(options, resolved, 'reconnectMax', 'at least', 'reconnectMin')
  return resolved
}

/** A peer or node name: a non-empty string of at most 255 UTF-8 bytes. */
export function checkName(what: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value) > 255) {
    throw invalid(what, 'must be a string of 1 to 255 bytes')
  }
}

/** A timeout as given by a caller: positive, at most {@link MAX_TIMER} ms, else a TypeError. */
export function checkTimeout(value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER) {
    throw new TypeError(`timeout must be a number of ms from 1 to ${MAX_TIMER}, got ${String(value)}`)
  }
  return value
}

/** A public key as a name: 40 characters of Z85. */
export const isKey = (s: unknown): s is string => typeof s === 'string' && /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/.test(s)

/** Every time option becomes a timer: positive, and at most what setTimeout can wait. */
function checkTime(key: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER) {
    throw invalid(key, `must be a number of ms greater than 0 and at most ${MAX_TIMER}`)
  }
}

const endpoints = (key: 'seeds' | 'advertise', list: unknown, max: number): void => {
  if (list === undefined) return
  if (!Array.isArray(list) || list.length > max || !list.every(isAddress)) {
    throw invalid(key, `must be an array of at most ${max} ZeroMQ endpoints (tcp://host:port), each at most ${MAX_ADDRESS_BYTES} bytes`)
  }
}

/** What joinMesh() takes with its seeds: the options that only mean something to a member. Throws INVALID_ARGUMENT. */
export function checkJoinOptions(options: unknown): asserts options is JoinMeshOptions {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalid('of joinMesh()', 'must be an object')
  for (const key of Object.keys(options)) {
    if (key !== 'advertise' && key !== 'resolver') throw invalid(key, 'is not an option of joinMesh() (advertise, resolver)')
  }
  checkAnnounced(options as JoinMeshOptions)
}

/** advertise and resolver, as the constructor and joinMesh() take them. */
function checkAnnounced(o: JoinMeshOptions): void {
  endpoints('advertise', o.advertise, MAX_ADDRESSES)
  if (o.resolver !== undefined && typeof o.resolver !== 'function')
    throw invalid('resolver', 'must be a function (host) => Promise<string[]>')
}

/** Seeds as the option (or joinMesh()) takes them: endpoints; on an encrypted node, KEY@ENDPOINT. Throws INVALID_ARGUMENT. */
export function checkSeeds(seeds: unknown, encrypted: boolean): void {
  if (!encrypted) return endpoints('seeds', seeds, MAX_SEEDS)
  // An encrypted member is dialled by its key: each seed says whose it is.
  const keyed = (seed: unknown): boolean => {
    if (typeof seed !== 'string') return false
    const { key, endpoint } = parseSeed(seed)
    return isKey(key) && isAddress(endpoint)
  }
  if (!Array.isArray(seeds) || seeds.length > MAX_SEEDS || !seeds.every(keyed)) {
    throw invalid(
      'seeds',
      `of an encrypted node must be an array of at most ${MAX_SEEDS} KEY@ENDPOINT (the member's public key, then where it listens)`,
    )
  }
}

/** seeds, advertise and gossipInterval. */
function checkMembership(o: ResolvedOptions): void {
  if (o.seeds !== undefined) checkSeeds(o.seeds, o.keypair !== undefined)
  checkAnnounced(o)
  if (o.resolver !== undefined && o.seeds === undefined) throw invalid('resolver', 'is for seeds given as host names: give seeds too')
  checkTime('gossipInterval', o.gossipInterval)
  const roles: unknown = o.roles
  if (!Array.isArray(roles) || roles.length > MAX_ROLES || !roles.every(isRole) || new Set(roles).size !== roles.length) {
    throw invalid('roles', `must be an array of at most ${MAX_ROLES} different names, each of 1 to ${MAX_ROLE_BYTES} bytes`)
  }
  if (o.advertise !== undefined && o.seeds === undefined)
    throw invalid('advertise', 'is for membership: give seeds too ([] for the first member)')
}

function checkInteger(key: string, value: unknown, min: number, max: number, minWhy = ''): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(key, `must be an integer from ${min}${minWhy === '' ? '' : ` ${minWhy}`} to ${max}`)
  }
}

type Related = 'peerTimeout' | 'pingInterval' | 'stallTimeout' | 'reconnectMax' | 'reconnectMin'

/**
 * `key` must be `relation` `other` and is not: the message names what the
 * user set. Setting only `pingInterval: 5000` is a mistake in pingInterval
 * (the default peerTimeout no longer fits), not in the peerTimeout they
 * never wrote.
 */
function related(given: BilateralOptions, resolved: ResolvedOptions, key: Related, relation: string, other: Related): BilateralError {
  const shown = (k: Related): string => `${k} ${resolved[k]}${given[k] === undefined ? ' (the default)' : ''}`
  const rule = `${key} must be ${relation} ${other}`
  if (given[key] === undefined && given[other] !== undefined) {
    return new BilateralError('INVALID_ARGUMENT', `option ${shown(other)} does not fit ${shown(key)}: ${rule}; set ${key} too`)
  }
  return new BilateralError('INVALID_ARGUMENT', `option ${shown(key)} does not fit ${shown(other)}: ${rule}`)
}

/** Every option's name (a Record, so a new option cannot be left out). */
const OPTION_NAMES: ReadonlySet<string> = new Set(
  Object.keys({
    network: 1,
    name: 1,
    keypair: 1,
    authorizedKeys: 1,
    defaultExposure: 1,
    callTimeout: 1,
    pingInterval: 1,
    peerTimeout: 1,
    stallTimeout: 1,
    joinInterval: 1,
    reconnectMin: 1,
    reconnectMax: 1,
    linger: 1,
    maxMessageSize: 1,
    callerStacks: 1,
    maxInflight: 1,
    maxConcurrent: 1,
    maxConcurrentBytes: 1,
    maxQueuedBytes: 1,
    joinTimeout: 1,
    maxConnections: 1,
    maxConnectionsPerAddress: 1,
    maxPeers: 1,
    legacyJoinProofs: 1,
    maxMetaBytes: 1,
    forwardMeta: 1,
    logger: 1,
    introspection: 1,
    metrics: 1,
    seeds: 1,
    advertise: 1,
    gossipInterval: 1,
    roles: 1,
    resolver: 1,
  } satisfies Record<keyof BilateralOptions, 1>),
)

/** Names users reach for, from other libraries, and the option they mean. */
const OPTION_ALIASES: Readonly<Record<string, string>> = {
  timeout: 'callTimeout',
  requestTimeout: 'callTimeout',
  heartbeatInterval: 'pingInterval',
  heartbeatTimeout: 'peerTimeout',
  id: 'name',
  nodeID: 'name',
  log: 'logger',
  keys: 'keypair',
  publicKey: 'keypair',
  secretKey: 'keypair',
}

function checkIntrospection(value: unknown): void {
  if (value === false) return
  if (value === null || typeof value !== 'object') throw invalid('introspection', 'must be false or { methods?, peers? }')
  const unknown = unknownOption(value, new Set(['methods', 'peers']), 'introspection')
  if (unknown !== undefined) throw invalid('introspection', `: ${unknown}`)
  const { methods, peers } = value as { methods?: unknown; peers?: unknown }
  if (methods !== undefined && (!Array.isArray(methods) || !methods.every((m) => INTROSPECTION_METHODS.includes(m)))) {
    throw invalid('introspection', `methods must be a list of ${INTROSPECTION_METHODS.join(', ')}`)
  }
  if (peers !== undefined && typeof peers !== 'function' && !(Array.isArray(peers) && peers.every((p) => typeof p === 'string'))) {
    throw invalid('introspection', 'peers must be a list of names or a predicate')
  }
}

function invalid(key: string, why: string): BilateralError {
  return new BilateralError('INVALID_ARGUMENT', `option ${key} ${why}`)
}
