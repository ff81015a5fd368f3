/**
 * Typed service contracts: a receiver's class (or an interface) declared
 * once gives the caller checked arguments and results (`node.service<T>()`)
 * and the handler its `args` and `ctx` types (`node.register<T>()`). Types
 * only, besides the small proxy that turns `arith.SumDiff(args)` into a call.
 */
import type { EventEmitter } from 'node:events'
import { BilateralError } from '../errors.js'
import type { CallContext, CallOptions } from './context.js'
import type { CallResult } from './results.js'
import type { MemberSelector } from '../membership/membership.js'

/**
 * The methods of `T` a peer may call, as `register()` exposes them: string
 * keys holding functions, except `constructor` and names starting with `_`.
 */
export type MethodName<T> = {
  [K in keyof T]-?: K extends 'constructor' | `_${string}` | Inherited<T>
    ? never
    : K extends string
      ? T[K] extends Function
        ? K
        : never
      : never
}[keyof T]

/** What a receiver inherits from a Node core class, which `register()` does not expose (an EventEmitter's `emit`, `on`, ...). */
type Inherited<T> = T extends EventEmitter ? keyof EventEmitter : never

/** The arguments a contract method takes (its first parameter; `undefined` if it has none). */
export type ArgsOf<F> = F extends (...params: infer P) => unknown ? (P extends [] ? undefined : P[0]) : never

/** What a contract method resolves to. */
export type ResultOf<F> = F extends (...params: never[]) => infer R ? Awaited<R> : never

/** A contract method's parameters at the caller: its arguments (optional when it takes none, or they may be undefined), then call options. */
export type ClientParams<F> = F extends (...params: infer P) => unknown
  ? P extends []
    ? [args?: undefined, options?: CallOptions]
    : undefined extends P[0]
      ? [args?: P[0], options?: CallOptions]
      : [args: P[0], options?: CallOptions]
  : never

/** A receiver on one peer: each method resolves to its result, or rejects with the peer's {@link BilateralError}. */
export type Unicast<T> = { readonly [K in MethodName<T>]: (...params: ClientParams<T[K]>) => Promise<ResultOf<T[K]>> }

/** A receiver on several peers: each method resolves to one {@link CallResult} per addressed peer, as `call()` does. */
export type Multicast<T> = {
  readonly [K in MethodName<T>]: (...params: ClientParams<T[K]>) => Promise<CallResult<ResultOf<T[K]>>[]>
}

/** What a node registers for contract `T`: each method, given its arguments and the call's context. */
export type Implementation<T> = {
  [K in MethodName<T>]: (args: ArgsOf<T[K]>, ctx: CallContext) => ResultOf<T[K]> | PromiseLike<ResultOf<T[K]>>
}

/** Options of `service()`: whom it calls, and the defaults of its calls. */
export type ServiceOptions = CallOptions & {
  /** Call this one peer, or one member the selector picks at each call: methods resolve to the result, or reject. */
  peer?: string | MemberSelector
  /** Call these peers (every active peer if empty or absent), or the members a selector addresses: methods resolve to a result per peer. */
  peers?: readonly string[] | MemberSelector
}

/** How a service's methods reach the node. */
export interface ServiceHost {
  request(peer: string | MemberSelector, method: string, args: unknown, options: CallOptions): Promise<unknown>
  call(to: readonly string[] | MemberSelector, method: string, args: unknown, options: CallOptions): Promise<CallResult[]>
}

const RECEIVER_NAME = /^[A-Za-z_$][\w$-]*$/
const INSPECT = Symbol.for('nodejs.util.inspect.custom')

/**
 * The proxy behind `service()`: a string property is a method of the
 * receiver (the peer decides whether it exists), made once and kept. What
 * `register()` never exposes is not one: `constructor`, names starting with
 * `_`, and `Object.prototype`'s (`toString`, `valueOf`, ...), so printing or
 * converting a service calls nothing; nor is `then`, so it is not taken for
 * a promise. Symbols are not methods either.
 */
export function makeService(host: ServiceHost, receiver: string, options: ServiceOptions = {}): object {
  if (typeof receiver !== 'string' || !RECEIVER_NAME.test(receiver)) {
    throw new BilateralError(
      'INVALID_ARGUMENT',
      `service(): receiver name ${JSON.stringify(receiver)} must be an identifier, such as 'Arith'`,
    )
  }
  if (options === null || typeof options !== 'object') throw new TypeError('service(): options must be an object')
  const { peer, peers, ...defaults } = options
  if (peer !== undefined && peers !== undefined) throw new TypeError('service(): give peer (one) or peers (several), not both')
  if (peer !== undefined && (peer === null || Array.isArray(peer) || (typeof peer !== 'string' && typeof peer !== 'object'))) {
    throw new TypeError('service(): peer must be a peer name or a member selector ({ role, offers }); use peers for several')
  }
  const to = peers ?? []
  const methods = new Map<string, (args?: unknown, options?: CallOptions) => Promise<unknown>>()
  const make = (name: string) => {
    const method = `${receiver}.${name}`
    const merged = (o: CallOptions | undefined): CallOptions => (o === undefined ? defaults : { ...defaults, ...o })
    return peer !== undefined
      ? (args?: unknown, o?: CallOptions) => host.request(peer, method, args, merged(o))
      : (args?: unknown, o?: CallOptions) => host.call(to, method, args, merged(o))
  }
  const on = peer === undefined ? '' : typeof peer === 'string' ? ` on ${peer}` : ` on one member ${JSON.stringify(peer)}`
  const label = `[service ${receiver}${on}]`
  const show = (): string => label
  // util.inspect looks at a proxy's target, not through its traps: the target says what it is.
  return new Proxy(Object.freeze({ [INSPECT]: show, [Symbol.toStringTag]: label }), {
    get(_target, key) {
      if (typeof key === 'symbol') return key === Symbol.toStringTag ? label : key === INSPECT ? show : undefined
      if (key === 'toString') return show
      if (key === 'then' || key === 'toJSON' || key.startsWith('_') || key in Object.prototype) return undefined
      let fn = methods.get(key)
      if (fn === undefined) methods.set(key, (fn = make(key)))
      return fn
    },
  })
}
