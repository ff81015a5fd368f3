/**
 * Liveness (PROTOCOL.md 11): a sweep every `max(5, pingInterval / 8)` ms that
 * pings what we dialled (once per `pingInterval`, and only once the last
 * ping was answered), declares down a peer that answers nothing for
 * `stallTimeout`, re-checks every encrypted peer's key once per
 * `pingInterval`, and ends join deadlines and retirements.
 *
 * It never touches a socket. A dead connection is libzmq's to find (its
 * heartbeats run in its I/O thread), and libzmq says so in order with the
 * data (sockets.ts): reading a socket's `readable` here, as earlier releases
 * did, consumed libzmq's edge-triggered wake-up under a pending receive and
 * stalled delivery on that socket.
 */
import type { Clock } from '../clock.js'
import type { Link } from './link.js'

export interface LivenessHost {
  readonly clock: Clock
  /** Every live link (one per active peer). */
  live(): Iterable<Link>
  /** Every link not closed: live and retired, inbound and outbound. */
  links(): Iterable<Link>
  tick(link: Link): void
  stalled(link: Link): void
  /** Encrypted nodes: cut `link` if its key is no longer allowed. */
  recheck(link: Link): void
  /** Join deadlines and retirements that end at `now`. */
  expire(now: number): void
  /** Our own event loop was blocked for `late` ms: silence that caused is ours, not the peers'. */
  forgive(late: number, now: number): void
}

export interface LivenessTiming {
  readonly pingInterval: number
  readonly stallTimeout: number
  /** Whether keys are checked (encrypted nodes with authorizedKeys, or any dialled key). */
  readonly checkKeys: boolean
}

export class Liveness {
  every: number
  private timer: unknown
  private last: number
  private stopped = false

  constructor(
    private readonly host: LivenessHost,
    private readonly timing: LivenessTiming,
  ) {
    this.every = sweepPeriod(timing.pingInterval)
    this.last = host.clock.now()
    this.schedule()
  }

  /** A new link must TICK every `ms` (its peer's stallTimeout is short): sweep often enough for it, from now. */
  tickAtLeastEvery(ms: number): void {
    const every = sweepPeriod(ms)
    if (every >= this.every) return
    this.every = every
    this.host.clock.clearTimer(this.timer)
    // The sweep moves earlier: that is not lateness to forgive.
    this.last = this.host.clock.now()
    if (!this.stopped) this.schedule()
  }

  stop(): void {
    this.stopped = true
    this.host.clock.clearTimer(this.timer)
  }

  private schedule(): void {
    this.timer = this.host.clock.setTimer(() => {
      if (this.stopped) return
      this.sweep()
      this.schedule()
    }, this.every)
  }

  /** One sweep (exported for tests with a manual clock). */
  sweep(): void {
    const { clock } = this.host
    const now = clock.now()
    const { pingInterval, stallTimeout, checkKeys } = this.timing
    const late = now - this.last - this.every
    if (late > 3 * this.every) this.host.forgive(late, now)
    this.last = now
    // The next sweep's period: as the options say, or sooner for the links whose peers announced a short stallTimeout.
    let tickEvery = pingInterval
    for (const link of [...this.host.live()]) {
      if (link.tickEvery !== undefined && link.tickEvery < tickEvery) tickEvery = link.tickEvery
      if (now - link.lastHeard > stallTimeout) {
        this.host.stalled(link)
      } else if (
        link.direction === 'outbound' &&
        now - link.lastTick >= Math.min(pingInterval, link.tickEvery ?? pingInterval) &&
        link.lastHeard >= link.lastTick
      ) {
        // One TICK at a time: a peer that has not answered the last one is busy, and more would only queue at it.
        link.lastTick = now
        this.host.tick(link)
      }
    }
    if (checkKeys) {
      for (const link of [...this.host.links()]) {
        if (link.state !== 'closed' && now - link.lastChecked >= pingInterval) {
          link.lastChecked = now
          this.host.recheck(link)
        }
      }
    }
    this.host.expire(now)
    this.every = sweepPeriod(Math.min(pingInterval, tickEvery))
  }
}

/** The sweep's period for links that must TICK every `tick` ms: an eighth of it, at least 5 ms. */
const sweepPeriod = (tick: number): number => Math.max(5, tick / 8)
