/**
 * How long a node's JOINs take to be answered, and so how long a dialler
 * waits before sending one again (PROTOCOL.md 10.1, D3).
 *
 * A JOIN on TCP is not lost: a re-send is for a listener that dropped one
 * (the duplicate probe, section 13). A listener that is only slow to answer
 * (a mesh forming, every event loop behind) answers the first JOIN and then
 * every re-send too, and each answer adds to the load that made it slow. So
 * the first re-send waits at least as long as STAYs have lately been taking
 * this node: their time smoothed the way TCP smooths round trips to time its
 * retransmissions (RFC 6298: the mean plus four deviations), measured from
 * the moment the listener could first read a fresh JOIN (queued on a
 * connection that is up, or that connection coming up) to its STAY. That wait is never shorter
 * than `joinInterval`, and the time STAYs take counts for at most a quarter
 * of `joinTimeout`, so a dialler still re-sends a few times before a
 * listener's deadline ends the attempt.
 */

/** Times the wait between two JOINs on one connection doubles: then it stays at 4 × the first (D3). */
export const JOIN_BACKOFF_DOUBLINGS = 2

export interface JoinTiming {
  readonly joinInterval: number
  readonly joinTimeout: number
}

export class JoinPace {
  /** The smoothed time a STAY takes, and its mean deviation, ms; undefined before the first. */
  private mean: number | undefined
  private deviation = 0

  constructor(private readonly timing: JoinTiming) {}

  /**
   * A STAY accepted `ms` after the listener could first read the fresh JOIN
   * it answers. A time beyond what the wait may be counts as that much
   * (joinTimeout / 4), so one listener holding its STAY back, or a STAY
   * that answered a re-send, moves the estimate no further than a slow one.
   */
  answered(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    ms = Math.min(ms, this.timing.joinTimeout / 4)
    if (this.mean === undefined) {
      this.mean = ms
      this.deviation = ms / 2
      return
    }
    this.deviation += (Math.abs(this.mean - ms) - this.deviation) / 4
    this.mean += (ms - this.mean) / 8
  }

  /** The wait after a fresh JOIN (`resends` 0) or after the `resends`-th re-send on one connection, ms. */
  wait(resends: number): number {
    const { joinInterval, joinTimeout } = this.timing
    const answers = this.mean === undefined ? 0 : Math.min(this.mean + 4 * this.deviation, joinTimeout / 4)
    return Math.max(joinInterval, answers) * 2 ** Math.min(resends, JOIN_BACKOFF_DOUBLINGS)
  }
}
