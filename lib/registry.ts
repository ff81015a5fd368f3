/**
 * The receiver registry: which `Receiver.Method` names exist and the function
 * behind each. Methods are snapshotted at registration into a Map, so lookup
 * never walks an object or its prototype chain at call time.
 */
import { BilateralError } from './errors.js'

/** What a handler learns about the call it serves. */
export interface CallContext {
  /** The caller's node name (its public key on an encrypted node). */
  readonly from: string
  /** The full method name, `Receiver.Method`. */
  readonly method: string
  /** True for a `cast`, whose result is discarded. */
  readonly cast: boolean
}

export type Handler = (args: unknown, ctx: CallContext) => unknown

const RECEIVER_NAME = /^[A-Za-z_$][\w$-]*$/

export class Registry {
  private readonly methods = new Map<string, Handler>()
  private readonly receivers = new Set<string>()

  /**
   * Expose `receiver`'s methods as `name.Method`. `name` defaults to the
   * receiver's class name. Exposed: functions found on the object or its
   * prototypes below `Object.prototype`, except `constructor`, names starting
   * with `_`, symbols and accessors.
   */
  register(receiver: object, name?: string): string[] {
    if (receiver === null || (typeof receiver !== 'object' && typeof receiver !== 'function')) {
      throw new BilateralError('INVALID_ARGUMENT', 'register() needs an object')
    }
    const receiverName = name ?? className(receiver)
    if (typeof receiverName !== 'string' || !RECEIVER_NAME.test(receiverName)) {
      throw new BilateralError(
        'INVALID_ARGUMENT',
        `receiver name ${JSON.stringify(receiverName)} must be an identifier (letters, digits, _ $ -); pass one as register(obj, 'Name')`,
      )
    }
    if (this.receivers.has(receiverName)) {
      throw new BilateralError('ALREADY_REGISTERED', `a receiver named ${receiverName} is already registered`)
    }
    const found = exposedMethods(receiver)
    this.receivers.add(receiverName)
    for (const [method, fn] of found) {
      this.methods.set(`${receiverName}.${method}`, fn.bind(receiver) as Handler)
    }
    return [...found.keys()].map((method) => `${receiverName}.${method}`)
  }

  /** The handler for a full method name, or undefined. */
  lookup(method: string): Handler | undefined {
    return this.methods.get(method)
  }

  /** Every exposed full method name. */
  names(): string[] {
    return [...this.methods.keys()]
  }
}

function className(receiver: object): string | undefined {
  const ctor = Object.getPrototypeOf(receiver)?.constructor
  if (typeof ctor !== 'function' || ctor === Object) return undefined
  return ctor.name
}

function exposedMethods(receiver: object): Map<string, (...args: unknown[]) => unknown> {
  const found = new Map<string, (...args: unknown[]) => unknown>()
  const seen = new Set<string>()
  for (let o: object | null = receiver; o !== null && o !== Object.prototype && o !== Function.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === 'constructor' || key.startsWith('_') || seen.has(key)) continue
      seen.add(key)
      const descriptor = Object.getOwnPropertyDescriptor(o, key)
      if (descriptor !== undefined && typeof descriptor.value === 'function') found.set(key, descriptor.value)
    }
  }
  return found
}
