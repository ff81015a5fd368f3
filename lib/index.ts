export { Bilateral, type BilateralEvents, type CallOptions, type WaitOptions } from './bilateral.js'
export { BilateralError, RemoteError, type ErrorCode } from './errors.js'
export type { CallResult } from './pending.js'
export type { CallContext } from './registry.js'
export type { DownReason } from './mesh.js'
export {
  DEFAULT_CALL_TIMEOUT,
  DEFAULT_JOIN_INTERVAL,
  DEFAULT_LINGER,
  DEFAULT_MAX_MESSAGE_SIZE,
  DEFAULT_PEER_TIMEOUT,
  DEFAULT_PING_INTERVAL,
  DEFAULT_RECONNECT_MAX,
  DEFAULT_RECONNECT_MIN,
  type BilateralOptions,
} from './options.js'
export { generateKeypair, publicKeyOf, type Keypair } from './crypto.js'
export type { PeerRule, RegisterOptions } from './registry.js'
