// A manual clock for unit tests of the state machines: its timers fire only
// when the test moves it.
import type { Clock } from '../lib/clock.js'

export type ManualClock = Clock & {
  /** Move on `ms`, firing each timer due on the way at the time it is due, in order. */
  advance(ms: number): void
  /** Move on `ms` without firing anything: timers due on the way are late. */
  jump(ms: number): void
  /** Fire the timers due by now (late ones at the time it is now), in order of when they were due. */
  fire(): void
  pending(): number
}

export function manualClock(): ManualClock {
  let now = 1000
  const timers = new Set<{ at: number; fn: () => void }>()
  return {
    now: () => now,
    setTimer(fn, ms) {
      const t = { at: now + ms, fn }
      timers.add(t)
      return t
    },
    clearTimer: (handle) => void timers.delete(handle as { at: number; fn: () => void }),
    hold: () => () => {},
    advance(ms) {
      const end = now + ms
      for (;;) {
        let next: { at: number; fn: () => void } | undefined
        for (const t of timers) if (t.at <= end && (next === undefined || t.at < next.at)) next = t
        if (next === undefined) break
        timers.delete(next)
        now = next.at
        next.fn()
      }
      now = end
    },
    jump: (ms) => void (now += ms),
    fire() {
      for (const t of [...timers].filter((t) => t.at <= now).sort((a, b) => a.at - b.at)) {
        timers.delete(t)
        t.fn()
      }
    },
    pending: () => timers.size,
  }
}
