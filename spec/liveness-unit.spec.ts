/**
 * Liveness as a state machine, without sockets: a manual clock and a host
 * that records. The row under test is PROTOCOL.md 11's rule that a dialler
 * sends within the stallTimeout its listener announced in STAY, whatever its
 * own pingInterval.
 */
import { describe, expect, it } from 'vitest'
import type { Clock } from '../lib/clock.js'
import { Link } from '../lib/mesh/link.js'
import { Liveness, type LivenessHost } from '../lib/mesh/liveness.js'

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0
  let timer: { at: number; fn: () => void } | undefined
  return {
    now: () => now,
    setTimer(fn, ms) {
      timer = { at: now + ms, fn }
      return timer
    },
    clearTimer: (handle) => void (timer === handle && (timer = undefined)),
    hold: () => () => {},
    // One timer at a time (Liveness keeps one): step to each firing in turn.
    advance(ms) {
      const end = now + ms
      while (timer !== undefined && timer.at <= end) {
        const t = timer
        timer = undefined
        now = t.at
        t.fn()
      }
      now = end
    },
  }
}

function setup(stallTimeout: number | undefined) {
  const clock = manualClock()
  const periods: number[] = []
  const setTimer = clock.setTimer
  clock.setTimer = (fn, ms) => (periods.push(ms), setTimer(fn, ms))
  const link = new Link(
    'listener',
    'outbound',
    { stallTimeout },
    () => Promise.resolve('sent'),
    { window: { messages: 64, bytes: 1 << 20 }, backlog: 1 << 20, queue: 1000 },
    0,
  )
  const ticks: number[] = []
  const live = [link]
  const host: LivenessHost = {
    clock,
    live: () => live,
    links: () => [link],
    // The listener answers each TICK at once.
    tick: (l) => (ticks.push(clock.now()), (l.lastHeard = clock.now())),
    stalled: () => {
      throw new Error('our own stallTimeout is never reached here')
    },
    recheck: () => {},
    expire: () => {},
    forgive: () => {},
  }
  // Our own timings: a ping every 3 s, a minute before we call the listener stalled.
  const liveness = new Liveness(host, { pingInterval: 3000, stallTimeout: 60_000, checkKeys: false })
  if (link.tickEvery !== undefined) liveness.tickAtLeastEvery(link.tickEvery)
  return { clock, ticks, liveness, periods, live }
}

describe('a dialler’s TICKs', () => {
  it('never come more often than every 100 ms, however short a stallTimeout the peer announces; the sweep slows again once its link is gone', () => {
    const { clock, ticks, liveness, periods, live } = setup(1)
    clock.advance(2000)
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBeGreaterThanOrEqual(100)
    expect(ticks.length).toBeGreaterThanOrEqual(15)
    expect(Math.min(...periods)).toBeGreaterThanOrEqual(100 / 8)
    live.length = 0
    periods.length = 0
    clock.advance(2000)
    liveness.stop()
    // Back to pingInterval / 8 (3000 / 8).
    expect(periods.at(-1)).toBe(3000 / 8)
  })

  it('come every pingInterval when the listener announced no stallTimeout (a listener of the previous release)', () => {
    const { clock, ticks, liveness } = setup(undefined)
    clock.advance(10_000)
    liveness.stop()
    expect(ticks.length).toBeGreaterThanOrEqual(3)
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBeGreaterThanOrEqual(3000)
  })

  it('come within half the stallTimeout the listener announced, however long our pingInterval', () => {
    const { clock, ticks, liveness } = setup(800)
    clock.advance(10_000)
    liveness.stop()
    expect(ticks.length).toBeGreaterThanOrEqual(20)
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBeLessThanOrEqual(400 + 50)
    expect(ticks[0]!).toBeLessThanOrEqual(450)
  })
})
