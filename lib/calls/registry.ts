/**
 * The receiver registry: which `Receiver.Method` names exist, the function
 * behind each, and who may call it. Methods are snapshotted at registration
 * into a Map, so lookup never walks an object or its prototype chain at call
 * time.
 */
import { EventEmitter } from 'node:events'
import { BilateralError } from '../errors.js'
import { unknownOption } from '../misuse.js'
import type { CallContext } from './context.js'
import { MAX_OFFERS, MAX_OFFER_BYTES } from '../membership/records.js'

export type { CallContext }

export type Handler = (args: unknown, ctx: CallContext) => unknown

/** Which peers may call a receiver: a list of names (public keys when encrypted) or a predicate. */
export type PeerRule = readonly string[] | ((peer: string) => boolean)

/** Options of `register()`. */
export interface RegisterOptions {
  /** Only these peers may call this receiver; others get NO_SUCH_METHOD. Default: the node's `defaultExposure`. */
  peers?: PeerRule
  /** Expose only these methods of the receiver. Default: all of them. */
  methods?: readonly string[]
  /**
   * Name it in this node's member record (the `seeds` option), so calls
   * addressed by what members offer find it. Default: true for a receiver
   * every peer may call, false for one restricted by `peers` or
   * `defaultExposure` (its name would tell members that may not call it what
   * this node does).
   */
  announce?: boolean
}

interface Entry {
  readonly fn: Handler
  readonly allows: (peer: string) => boolean
}

const RECEIVER_NAME = /^[A-Za-z_$][\w$-]*$/
const REGISTER_OPTIONS: ReadonlySet<string> = new Set(['peers', 'methods', 'announce'])
const everyone = (): boolean => true

export class Registry {
  private readonly methods = new Map<string, Entry>()
  private readonly receivers = new Set<string>()
  /** Receivers named in the member record, in the order registered. */
  readonly announced: string[] = []

  /** @param defaultPeers the rule for receivers registered without `peers`. */
  constructor(private readonly defaultPeers: PeerRule | undefined = undefined) {}

  /**
   * Expose `receiver`'s methods as `name.Method`. `name` defaults to the
   * receiver's class name. Exposed: functions found on the object or its
   * prototypes up to the first built-in or Node core class (Object, Map,
   * EventEmitter, ...), except `constructor`, names starting with `_`, symbols
   * and accessors; narrowed by `options.methods`.
   */
  register(receiver: object, name?: string, options: RegisterOptions = {}, reserved = false): string[] {
    if (receiver === null || (typeof receiver !== 'object' && typeof receiver !== 'function')) {
      throw new BilateralError('INVALID_ARGUMENT', 'register() needs an object')
    }
    if (options === null || typeof options !== 'object')
      throw new BilateralError('INVALID_ARGUMENT', 'register(): options must be an object')
    const unknown = unknownOption(options, REGISTER_OPTIONS, 'register()', { peer: 'peers', method: 'methods', exposure: 'peers' })
    if (unknown !== undefined) throw new BilateralError('INVALID_ARGUMENT', unknown)
    const receiverName = name ?? className(receiver)
    if (typeof receiverName !== 'string' || !RECEIVER_NAME.test(receiverName)) {
      throw new BilateralError(
        'INVALID_ARGUMENT',
        `receiver name ${JSON.stringify(receiverName)} must be an identifier (letters, digits, _ $ -); pass one as register(obj, 'Name')`,
      )
    }
    if (receiverName.startsWith('$') && !reserved) {
      throw new BilateralError('INVALID_ARGUMENT', `receiver names starting with $ are reserved for the node's own (${receiverName})`)
    }
    if (this.receivers.has(receiverName)) {
      throw new BilateralError('ALREADY_REGISTERED', `a receiver named ${receiverName} is already registered`)
    }
    const found = exposedMethods(receiver)
    if (options.methods !== undefined) {
      const wanted = new Set(options.methods)
      for (const method of wanted) {
        if (!found.has(method)) throw new BilateralError('INVALID_ARGUMENT', `${receiverName} has no method ${method} to expose`)
      }
      for (const method of [...found.keys()]) if (!wanted.has(method)) found.delete(method)
    }
    if (options.announce !== undefined && typeof options.announce !== 'boolean') {
      throw new BilateralError('INVALID_ARGUMENT', 'register(): announce must be a boolean')
    }
    const allows = toPredicate(options.peers ?? this.defaultPeers)
    const announce = !reserved && (options.announce ?? allows === everyone) && this.announceable(receiverName, options.announce === true)
    this.receivers.add(receiverName)
    if (announce) this.announced.push(receiverName)
    for (const [method, fn] of found) {
      this.methods.set(`${receiverName}.${method}`, { fn: fn.bind(receiver) as Handler, allows })
    }
    return [...found.keys()].map((method) => `${receiverName}.${method}`)
  }

  /**
   * Can `name` be announced in a member record (at most MAX_OFFERS names of
   * at most MAX_OFFER_BYTES)? One that cannot is not announced; asked for
   * (`announce: true`), that is an INVALID_ARGUMENT.
   */
  private announceable(name: string, asked: boolean): boolean {
    const why =
      Buffer.byteLength(name) > MAX_OFFER_BYTES
        ? `a member record names receivers of at most ${MAX_OFFER_BYTES} bytes`
        : this.announced.length >= MAX_OFFERS
          ? `a member record names at most ${MAX_OFFERS} receivers`
          : undefined
    if (why !== undefined && asked) throw new BilateralError('INVALID_ARGUMENT', `register(): ${name} cannot be announced: ${why}`)
    return why === undefined
  }

  /** The receivers and methods `peer` may call, each receiver's methods in the order registered. */
  visibleTo(peer: string): Record<string, string[]> {
    const out: Record<string, string[]> = {}
    for (const [full, entry] of this.methods) {
      if (!entry.allows(peer)) continue
      const dot = full.indexOf('.')
      ;(out[full.slice(0, dot)] ??= []).push(full.slice(dot + 1))
    }
    return out
  }

  /** The handler `peer` may call under a full method name, or undefined. */
  lookup(method: string, peer: string): Handler | undefined {
    const entry = this.methods.get(method)
    return entry !== undefined && entry.allows(peer) ? entry.fn : undefined
  }
}

/** A rule as a predicate; validates lists. */
export function toPredicate(rule: PeerRule | undefined): (peer: string) => boolean {
  if (rule === undefined) return everyone
  if (typeof rule === 'function') {
    return (peer) => {
      try {
        return rule(peer) === true
      } catch {
        return false
      }
    }
  }
  if (!Array.isArray(rule) || !rule.every((p) => typeof p === 'string')) {
    throw new BilateralError('INVALID_ARGUMENT', 'peers must be a list of names or a predicate')
  }
  const allowed = new Set(rule)
  return (peer) => allowed.has(peer)
}

function className(receiver: object): string | undefined {
  const ctor = Object.getPrototypeOf(receiver)?.constructor
  if (typeof ctor !== 'function' || ctor === Object) return undefined
  return ctor.name
}

/**
 * Prototypes whose methods are never exposed, even when a receiver's class
 * extends them: a class extending EventEmitter must not offer `emit` or
 * `removeAllListeners` to peers, nor a Map its `clear`.
 */
const NOT_EXPOSED: ReadonlySet<object> = new Set<object>([
  Object.prototype,
  Function.prototype,
  Array.prototype,
  Map.prototype,
  Set.prototype,
  WeakMap.prototype,
  WeakSet.prototype,
  Promise.prototype,
  Error.prototype,
  Date.prototype,
  RegExp.prototype,
  Object.getPrototypeOf(Uint8Array.prototype) as object,
  Uint8Array.prototype,
  EventEmitter.prototype,
  EventTarget.prototype,
])

function exposedMethods(receiver: object): Map<string, (...args: unknown[]) => unknown> {
  const found = new Map<string, (...args: unknown[]) => unknown>()
  const seen = new Set<string>()
  for (let o: object | null = receiver; o !== null && !NOT_EXPOSED.has(o); o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === 'constructor' || key.startsWith('_') || seen.has(key)) continue
      seen.add(key)
      const descriptor = Object.getOwnPropertyDescriptor(o, key)
      if (descriptor !== undefined && typeof descriptor.value === 'function') found.set(key, descriptor.value)
    }
  }
  return found
}
