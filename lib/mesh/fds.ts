/**
 * The file-descriptor budget. A process that runs out of descriptors can no
 * longer open a file, a socket or a pipe, and libzmq, which cannot create a
 * socket's mailbox then, leaves it half made. So the node never takes the
 * last ones: it keeps a reserve for the rest of the process, refuses a dial
 * with `SOCKET` and a handshake on its ROUTER before the reserve is reached.
 *
 * The limit and the count come from Linux's /proc; where they cannot be read,
 * nothing is refused here and the operating system's error is reported
 * instead.
 */
import { readdirSync, readFileSync } from 'node:fs'

/** Descriptors one dial takes: its TCP connection (its socket's, shared with other dials, are taken with the socket: sockets.ts). */
export const FDS_PER_DIAL = 1
/** Descriptors one inbound connection takes. */
export const FDS_PER_CONNECTION = 1

/** The reserve kept for the rest of the process: 5% of the limit, at least 32 and at most 1024. */
export const reserveFor = (limit: number): number => Math.max(32, Math.min(1024, Math.floor(limit * 0.05)))

/** How long a count of open descriptors is trusted, ms (counting them costs about 30 µs per 500, and grows with them). */
const RECOUNT_MS = 1000
/**
 * Least time between two counts near the limit, ms. Between them, what was
 * taken since the last count is added to it, which can only overstate the
 * descriptors open (closed ones are not subtracted), so a dial is refused
 * early, never late. Counting at every dial near the limit blocked a
 * process of 50 members, each with 99 links, for seconds at a time: with
 * 12,000 descriptors open, each count reads a directory of 12,000 entries.
 */
const MIN_RECOUNT_MS = 100
/**
 * Descriptors a count may miss, beyond one for each take since the count
 * before it: libzmq opens a dial's TCP connection (and accepts a
 * connection) in its own I/O thread, after the call that asked for it has
 * returned, so each of the takes just made may not show in /proc yet. A
 * constant alone was not enough: under a loaded machine's lag, a count of a
 * process dialling in a tight loop came out 19 short, and the reserve was
 * breached by 3.
 */
export const UNSEEN_FDS = 16

export class FdBudget {
  private readonly limit: number | undefined
  readonly reserve: number
  private counted = 0
  private countedAt = -Infinity
  /** Descriptors we asked for since the last count. */
  private since = 0
  /** Takes since the last count: each may hold a descriptor the next count does not see yet. */
  private takes = 0

  /** @param count how many descriptors are open now (tests give their own). */
  constructor(
    limit: number | undefined = readLimit(),
    private readonly count: () => number | undefined = countOpen,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.limit = limit
    this.reserve = limit === undefined ? 0 : reserveFor(limit)
  }

  /** May `n` more descriptors be taken without eating into the reserve? Counts them as taken if so. */
  take(n: number): boolean {
    if (this.limit === undefined) return true
    const now = this.now()
    const near = this.counted + this.since + n > this.limit - 2 * this.reserve
    if (now - this.countedAt > RECOUNT_MS || (near && now - this.countedAt > MIN_RECOUNT_MS)) {
      const open = this.count()
      if (open === undefined) return true
      this.counted = open
      this.countedAt = now
      this.since = UNSEEN_FDS + this.takes
      this.takes = 0
    }
    if (this.counted + this.since + n > this.limit - this.reserve) return false
    this.since += n
    this.takes++
    return true
  }

  /** What the budget is, for error messages. */
  describe(): string {
    return this.limit === undefined ? 'unknown' : `${this.limit} descriptors, ${this.reserve} kept in reserve`
  }
}

let shared: FdBudget | undefined
/** The budget of this process, shared by every node in it. */
export function fdBudget(): FdBudget {
  shared ??= new FdBudget()
  return shared
}

/** The soft limit of open files, from /proc/self/limits (undefined where it cannot be read). */
export function readLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    const n = soft === undefined ? NaN : Number(soft)
    return Number.isFinite(n) && n > 0 ? n : undefined
  } catch {
    return undefined
  }
}

function countOpen(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return undefined
  }
}
