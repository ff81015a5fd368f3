/**
 * Logging: what a node reports of what it does (peers up, down and refused,
 * dial attempts and back-off, handshake failures, dropped frames, refused
 * calls), with structured fields and never a payload. The `logger` option
 * takes the shape pino, bunyan and `console` share; `DEBUG=bilateral` (or
 * `NODE_DEBUG=bilateral`) logs to stderr without a code change. Silent by
 * default, and then a node builds no fields at all.
 */

/** The methods of a logger: pino's, bunyan's and `console`'s, called as `(fields, message)`. */
export interface Logger {
  debug(fields: object, message: string): void
  info(fields: object, message: string): void
  warn(fields: object, message: string): void
  error(fields: object, message: string): void
}

export type LogLevel = keyof Logger
const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error']

/** Is `value` a logger (an object with the four methods)? */
export function isLogger(value: unknown): value is Logger {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    LEVELS.every((level) => typeof (value as Record<string, unknown>)[level] === 'function')
  )
}

/**
 * Does the environment ask for our logs? `DEBUG` as the `debug` package
 * reads it (names separated by commas or spaces; `bilateral`, `bilateral*`,
 * `bilateral:*` or `*`, none excluded by `-bilateral`), or `NODE_DEBUG`
 * naming `bilateral`, as Node's `util.debuglog` reads it.
 */
export function wantsDebug(env: Readonly<Record<string, string | undefined>> = process.env): boolean {
  const names = (text: string | undefined): string[] => (text ?? '').split(/[\s,]+/).filter((n) => n !== '')
  const debug = names(env['DEBUG'])
  if (debug.includes('-bilateral') || debug.includes('-bilateral*')) return false
  if (debug.some((n) => n === '*' || n === 'bilateral' || n === 'bilateral*' || n === 'bilateral:*')) return true
  return names(env['NODE_DEBUG']).some((n) => n.toLowerCase() === 'bilateral' || n === '*')
}

/** A logger that writes one line a record to `write` (stderr): `bilateral LEVEL message key=value ...`. */
export function lineLogger(write: (line: string) => void = (line) => void process.stderr.write(line)): Logger {
  const log =
    (level: LogLevel) =>
    (fields: object, message: string): void => {
      const pairs = Object.entries(fields).map(([key, value]) => `${key}=${shown(value)}`)
      write(`bilateral ${level.toUpperCase()} ${message}${pairs.length === 0 ? '' : ` ${pairs.join(' ')}`}\n`)
    }
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }
}

/**
 * A field's value on a line: bare when it is a plain word or number, else
 * as JSON, at most 200 characters of a string, with every control, line
 * separator and bidirectional override escaped too, so a peer's text can
 * neither break the line nor steer a terminal.
 */
function shown(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (typeof value === 'string' && value.length <= MAX_FIELD && /^[\w.:/@*+-]+$/.test(value)) return value
  let text: string
  try {
    text = JSON.stringify(typeof value === 'string' && value.length > MAX_FIELD ? `${value.slice(0, MAX_FIELD)}…` : value) ?? String(value)
  } catch {
    return '"?"'
  }
  return text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

const MAX_FIELD = 200
/** What JSON leaves as it is but a terminal or a log reader must not see raw: DEL and C1 controls, line and paragraph separators, bidi controls. */
const UNSAFE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g
