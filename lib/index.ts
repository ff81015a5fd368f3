export { Bilateral, type BilateralEvents, type BilateralStats, type CallOptions, type WaitOptions } from './node.js'
export { BilateralError, RemoteError, type ErrorCode } from './errors.js'
export type { CallResult } from './calls/outgoing.js'
export type { CallContext, PeerRule, RegisterOptions } from './calls/registry.js'
export type { DownReason } from './mesh/mesh.js'
export {
  DEFAULT_CALL_TIMEOUT,
  DEFAULT_JOIN_INTERVAL,
  DEFAULT_JOIN_TIMEOUT,
  DEFAULT_LINGER,
  DEFAULT_MAX_CONCURRENT_BYTES,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
  DEFAULT_MAX_MESSAGE_SIZE,
  DEFAULT_MAX_PEERS,
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_PEER_TIMEOUT,
  DEFAULT_PING_INTERVAL,
  DEFAULT_RECONNECT_MAX,
  DEFAULT_RECONNECT_MIN,
  type BilateralOptions,
} from './options.js'
export { generateKeypair, publicKeyOf, type Keypair } from './crypto.js'
