export { Bilateral, type BilateralEvents, type BilateralStats, type PeerInfo, type WaitOptions } from './node.js'
export type { Logger } from './log.js'
export type { Figures, MetricsSnapshot } from './observe/metrics.js'
export type { InboundCall, InboundOutcome, Interceptor, OutboundCall } from './observe/interceptors.js'
export type { IntrospectionMethod, IntrospectionOptions } from './introspection.js'
export { BilateralError, RemoteError, type ErrorCode, type RemoteOrigin } from './errors.js'
export type { ArgsOf, Implementation, MethodName, Multicast, ResultOf, ServiceOptions, Unicast } from './calls/contract.js'
export type { CallContext, CallOptions, CastOptions } from './calls/context.js'
export type { CallResult } from './calls/results.js'
export type { CallStream } from './calls/stream.js'
export type { Until } from './calls/policy.js'
export type { Meta } from './calls/meta.js'
export type { PeerRule, RegisterOptions } from './calls/registry.js'
export type { DownReason } from './mesh/mesh.js'
export type { MemberEvent, MemberInfo, MemberSelector, MemberState } from './membership/membership.js'
export type { Resolver } from './membership/seeds.js'
export {
  DEFAULT_CALL_TIMEOUT,
  DEFAULT_JOIN_INTERVAL,
  DEFAULT_JOIN_TIMEOUT,
  DEFAULT_LINGER,
  DEFAULT_MAX_CONCURRENT_BYTES,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_MAX_MESSAGE_SIZE,
  DEFAULT_MAX_META_BYTES,
  DEFAULT_MAX_PEERS,
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_PEER_TIMEOUT,
  DEFAULT_PING_INTERVAL,
  DEFAULT_RECONNECT_MAX,
  DEFAULT_RECONNECT_MIN,
  type BilateralOptions,
  type JoinMeshOptions,
} from './options.js'
export { generateKeypair, publicKeyOf, type Keypair } from './crypto.js'
