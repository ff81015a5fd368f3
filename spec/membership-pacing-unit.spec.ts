// Membership's dial pacing on its own: a fake host that records connect()
// and a manual clock whose timers can be made to fire late, as they do in a
// process whose event loop is behind.
import { describe, expect, it } from 'vitest'
import type { Clock } from '../lib/clock.js'
import { Membership, type MemberHost } from '../lib/membership/membership.js'
import { manualClock } from './manual-clock.js'

function host(clock: Clock, dialled: string[]): MemberHost {
  return {
    name: 'a',
    clock,
    addresses: () => ['tcp://127.0.0.1:1'],
    connect: (name) => void dialled.push(name),
    disconnect: async () => undefined,
    dial: () => Promise.reject(new Error('no seeds here')),
    dialling: (name) => dialled.includes(name),
    dialAddress: () => undefined,
    isUp: () => false,
    upNames: () => [],
    request: () => Promise.reject(new Error('no peers')),
    cast: async () => [],
    offers: () => [],
    admits: () => true,
    event: () => undefined,
  }
}

describe('membership dial pacing', () => {
  it('opens up to 16 new dials a round on time, and fewer the later the round runs', () => {
    const clock = manualClock()
    const dialled: string[] = []
    const m = new Membership(host(clock, dialled), {
      seeds: [],
      resolver: async () => [],
      advertise: undefined,
      roles: [],
      gossipInterval: 1000,
      suspectTimeout: 4000,
    })
    // 40 members that sort after "a", so a dials them.
    const records = Array.from({ length: 40 }, (_, i) => ({
      name: `b${String(i).padStart(2, '0')}`,
      addresses: [`tcp://127.0.0.1:${2000 + i}`],
      incarnation: 1,
      version: 0,
      status: 0,
    }))
    m.receiver().Exchange({ records, want: [] }, { from: 'x' })
    m.start()
    clock.fire()
    // The news and the first round, on time: 16 each at most, 40 in all known.
    expect(dialled.length).toBeGreaterThan(0)
    expect(dialled.length).toBeLessThanOrEqual(32)
    const onTime = dialled.length
    // The next round runs a whole gossipInterval late: 16 / (1 + 4) = 3 new dials.
    clock.jump(1250 + 1000)
    clock.fire()
    expect(dialled.length - onTime).toBeLessThanOrEqual(3)
    expect(dialled.length - onTime).toBeGreaterThanOrEqual(1)
    void m.leave()
  })
})
