import { fileURLToPath } from 'node:url'

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

/** Base class of every error this package raises or reports. Branch on `code`, a closed union. */
export class BilateralError extends Error {
  readonly code: ErrorCode
  readonly peer: string | undefined

  constructor(code: ErrorCode, message: string, options: BilateralErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'BilateralError'
    this.code = code
    this.peer = options.peer
  }
}

/** What a remote error says of where it began, as an ERROR frame carries it (PROTOCOL.md section 6). */
export interface RemoteOrigin {
  /** The thrown error's `name` (`Error` for a value that is not an error). */
  readonly name: string
  /** Its `message`. */
  readonly message: string
  /** Its own string `code` (`E_NOUSER`, `ENOENT`), when it had one. */
  readonly code?: string | undefined
  /** Its `details`: any encodable value, at most 4 KiB encoded. */
  readonly details?: unknown
  /** The peers it came through before `peer`, the first where it was thrown (empty when `peer` threw it). */
  readonly via?: readonly string[]
}

/**
 * A handler on a peer threw or rejected. `code` is `REMOTE`; what the
 * handler threw is in `remoteName`, `remoteMessage`, `remoteCode` and
 * `details`. When a handler re-throws a RemoteError it got from a further
 * peer, those stay the original's and `path` grows: the caller sees the code
 * the first handler threw and every peer it came through.
 */
export class RemoteError extends BilateralError {
  readonly remoteName: string
  readonly remoteMessage: string
  readonly remoteCode: string | undefined
  /** The thrown error's `details` property, when it had an encodable one. */
  readonly details: unknown
  /** Where it came from: the peer that threw it first, then each it passed through; the last is `peer`. */
  readonly path: readonly string[]

  constructor(peer: string, origin: RemoteOrigin) {
    const path = Object.freeze([...(origin.via ?? []), peer])
    super('REMOTE', `${origin.name}: ${origin.message}`, { peer })
    this.name = 'RemoteError'
    this.remoteName = origin.name
    this.remoteMessage = origin.message
    this.remoteCode = origin.code
    this.details = origin.details
    this.path = path
    // Its stack is where it came from, never this library's frames: withCallerStack adds the caller's, when they are kept.
    this.stack = [this.header(), ...remoteFrames(path)].join('\n')
  }

  /** The first line of its stack: recognisably remote, with the original code and the way it came. */
  header(): string {
    const code = this.remoteCode === undefined ? '' : ` [${this.remoteCode}]`
    const from = this.path.map(printable).join(' → ')
    return `RemoteError: ${this.remoteName}${code}: ${this.remoteMessage} (from ${from})`
  }
}

/** A peer name as a stack shows it: as it is, or quoted if it holds control characters (a newline must not make a frame). */
const printable = (name: string): string => (/[\u0000-\u001f\u007f]/.test(name) ? JSON.stringify(name) : name)

/** The stack lines of the peers a remote error came through. */
const remoteFrames = (path: readonly string[]): string[] => path.map((p) => `    at remote peer ${printable(p)}`)

/**
 * Where this library's code is: its compiled `dist/` and its sources
 * `lib/` (where `--enable-source-maps` maps frames), each as a file URL (as
 * ES module frames show it) and as a path. Frames there are left out of the
 * stacks it builds.
 */
const OWN_CODE: readonly string[] = ['dist/', 'lib/'].flatMap((dir) => {
  const url = new URL(`../${dir}`, import.meta.url)
  return [url.href, fileURLToPath(url)]
})
const isOwnFrame = (line: string): boolean => OWN_CODE.some((place) => line.includes(place))

/**
 * Replace `error`'s stack below its first line with the stack captured at the
 * call site (without this library's frames), so a timeout or remote failure
 * points at the user's code.
 */
export function withCallerStack<E extends Error>(error: E, site: { stack?: string } | undefined): E {
  const frames = site?.stack
  if (frames !== undefined) {
    const mine = frames
      .split('\n')
      .slice(1)
      .filter((line) => !isOwnFrame(line))
    const head = error instanceof RemoteError ? error.header() : `${error.name}: ${error.message}`
    const remote = error instanceof RemoteError ? remoteFrames(error.path) : []
    error.stack = [head, ...remote, ...mine].join('\n')
  }
  return error
}

/** Text that came from elsewhere (a peer, a handler), for our messages: never at full length. */
export const clip = (text: string, max = 200): string => (text.length > max ? `${text.slice(0, max)}…` : text)
