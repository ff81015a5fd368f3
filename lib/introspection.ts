/**
 * What every node serves about itself, under the reserved receiver `$node`:
 * `Ping`, `Info`, `Health`, and (when allowed) `Peers` and `Stats`. Built on
 * a narrow view of the node, registered like any receiver, so exposure rules
 * decide who may call which; `Info` lists only what its caller may call.
 */
import { createRequire } from 'node:module'
import type { CallContext } from './calls/context.js'
import type { PeerRule } from './calls/registry.js'

/** The methods of `$node`. */
export type IntrospectionMethod = 'Ping' | 'Info' | 'Health' | 'Peers' | 'Stats'
export const INTROSPECTION_METHODS: readonly IntrospectionMethod[] = ['Ping', 'Info', 'Health', 'Peers', 'Stats']
/** What `$node` answers by default: nothing about other peers or the node's load. */
export const DEFAULT_INTROSPECTION: readonly IntrospectionMethod[] = ['Ping', 'Info', 'Health']

/** The `introspection` option: which `$node` methods, to whom; `false` for none. */
export type IntrospectionOptions =
  | false
  | {
      /** Default `['Ping', 'Info', 'Health']`; add `'Peers'` and `'Stats'` for operators. */
      methods?: readonly IntrospectionMethod[]
      /** Who may call them. Default: the node's `defaultExposure`. */
      peers?: PeerRule
    }

/** What `$node` needs of its node. */
export interface Introspected {
  readonly name: string
  readonly network: string
  /** What it is for (the `roles` option). */
  readonly roles: readonly string[]
  /** When the node was made, ms since the epoch. */
  readonly started: number
  /** The endpoints it listens on. */
  addresses(): string[]
  /** The receivers and methods `peer` may call. */
  visibleTo(peer: string): Record<string, string[]>
  peers(): unknown
  stats(): unknown
  activePeers(): number
}

/** This package's version, from its package.json (beside dist/ and lib/). */
export const RELEASE: string = (() => {
  try {
    return String((createRequire(import.meta.url)('../package.json') as { version?: unknown }).version ?? 'unknown')
  } catch {
    return 'unknown'
  }
})()

/** The `$node` receiver: each method answers from the node's state at the moment of the call. */
export function introspection(node: Introspected): Record<IntrospectionMethod, (args: unknown, ctx: CallContext) => unknown> {
  return {
    /** A round trip: the caller times it; the answer says when it was served. */
    Ping: () => ({ name: node.name, at: Date.now() }),
    Info: (_args, ctx) => ({
      name: node.name,
      network: node.network,
      roles: [...node.roles],
      release: RELEASE,
      uptime: Date.now() - node.started,
      addresses: node.addresses(),
      receivers: node.visibleTo(ctx.from),
    }),
    Health: () => ({ status: 'ok', uptime: Date.now() - node.started, peers: node.activePeers() }),
    Peers: () => node.peers(),
    Stats: () => node.stats(),
  }
}
