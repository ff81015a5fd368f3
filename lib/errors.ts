/**
 * Every error `bilateral` produces is a {@link BilateralError} with a stable
 * string `code`. Tests and callers should branch on `code`, never on `message`.
 *
 * | code | meaning |
 * | --- | --- |
 * | `TIMEOUT` | no reply (or no peer) before the deadline |
 * | `CANCELLED` | the call was cancelled (its `signal`, its `until` met, a `stream()` left early) before this peer answered |
 * | `NOT_CONNECTED` | a named peer is not active |
 * | `NO_SUCH_METHOD` | the peer exposes no such method |
 * | `REMOTE` | the remote handler threw or rejected ({@link RemoteError}) |
 * | `PEER_DOWN` | the peer left, lost its connection or was refused while the call was pending |
 * | `CLOSED` | this node was closed |
 * | `BAD_REQUEST` | the peer could not decode what we sent |
 * | `BAD_REPLY` | the handler's result could not be encoded |
 * | `NETWORK_MISMATCH`, `LOOPBACK`, `DUPLICATE`, `WRONG_NAME`, `VERSION`, `PROTOCOL` | a join was refused |
 * | `AUTH` | a key was refused (ZAP) or a JOIN did not prove its name |
 * | `HANDSHAKE` | the ZeroMQ handshake failed (plaintext meeting CURVE) |
 * | `INVALID_ARGUMENT`, `ALREADY_CONNECTED`, `ALREADY_REGISTERED`, `BIND_FAILED` | local misuse |
 * | `SOCKET` | no socket could be made (for example, out of file descriptors) |
 * | `OVERLOADED` | a limit was reached: `maxInflight` here, or `maxConcurrent` at the peer |
 * | `TOO_LARGE` | encoded arguments, a result or a method name exceed `maxMessageSize` |
 * | `INTERNAL` | handling one message failed (often a throwing event listener); reported, the node goes on |
 */
export type ErrorCode =
  | 'TIMEOUT'
  | 'CANCELLED'
  | 'NOT_CONNECTED'
  | 'NO_SUCH_METHOD'
  | 'REMOTE'
  | 'PEER_DOWN'
  | 'CLOSED'
  | 'BAD_REQUEST'
  | 'BAD_REPLY'
  | 'NETWORK_MISMATCH'
  | 'LOOPBACK'
  | 'DUPLICATE'
  | 'WRONG_NAME'
  | 'VERSION'
  | 'PROTOCOL'
  | 'AUTH'
  | 'HANDSHAKE'
  | 'INVALID_ARGUMENT'
  | 'ALREADY_CONNECTED'
  | 'ALREADY_REGISTERED'
  | 'BIND_FAILED'
  | 'SOCKET'
  | 'INTERNAL'
  | 'OVERLOADED'
  | 'TOO_LARGE'

export interface BilateralErrorOptions {
  /** The peer this error concerns, when there is one. */
  peer?: string
  cause?: unknown
}

/** Base class of every error this package raises or reports. */
export class BilateralError extends Error {
  readonly code: ErrorCode | (string & {})
  readonly peer: string | undefined

  constructor(code: ErrorCode | (string & {}), message: string, options: BilateralErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'BilateralError'
    this.code = code
    this.peer = options.peer
  }
}

/**
 * A handler on `peer` threw or rejected. `name` and `message` are the remote
 * error's own; `remoteCode` is its `code` property when that was a string.
 */
export class RemoteError extends BilateralError {
  readonly remoteName: string
  readonly remoteCode: string | undefined

  constructor(peer: string, remoteName: string, message: string, remoteCode?: string) {
    super('REMOTE', message, { peer })
    this.name = remoteName
    this.remoteName = remoteName
    this.remoteCode = remoteCode
  }
}

/**
 * Replace `error`'s stack below its first line with the stack captured at the
 * call site, so a timeout or remote failure points at the user's code.
 */
export function withCallerStack<E extends Error>(error: E, site: { stack?: string } | undefined): E {
  const frames = site?.stack
  if (frames !== undefined) {
    const cut = frames.indexOf('\n')
    error.stack = `${error.name}: ${error.message}${cut === -1 ? '' : frames.slice(cut)}`
  }
  return error
}

/** Text that came from elsewhere (a peer, a handler), for our messages: never at full length. */
export const clip = (text: string, max = 200): string => (text.length > max ? `${text.slice(0, max)}…` : text)
