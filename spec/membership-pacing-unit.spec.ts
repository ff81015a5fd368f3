// Membership's dial pacing on its own: a fake host that records connect()
// and a manual clock whose timers can be made to fire late, as they do in a
// process whose event loop is behind.
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Clock } from '../lib/clock.js'
import { Membership, type MemberHost, type MemberInfo } from '../lib/membership/membership.js'
import { manualClock } from './manual-clock.js'

function host(
  clock: Clock,
  dialled: string[],
  up: Set<string> = new Set(),
  asked: string[] = [],
  admitted: (name: string) => boolean = () => true,
  events: [string, MemberInfo][] = [],
  disconnected: string[] = [],
): MemberHost {
  return {
    name: 'a',
    clock,
    addresses: () => ['tcp://127.0.0.1:1'],
    connect: (name) => void dialled.push(name),
    disconnect: async (name) => void disconnected.push(name),
    dial: () => Promise.reject(new Error('no seeds here')),
    dialling: (name) => dialled.includes(name),
    dialAddress: () => undefined,
    isUp: (name) => up.has(name),
    upNames: () => [...up],
    request: (peer) => (asked.push(peer), Promise.reject(new Error('no peers'))),
    cast: async () => [],
    offers: () => [],
    admits: (name) => admitted(name),
    event: (kind, member) => void events.push([kind, member]),
  }
}

const options = {
  seeds: [],
  resolver: async () => [],
  advertise: undefined,
  roles: [],
  gossipInterval: 1000,
  suspectTimeout: 4000,
}

/** `n` members that sort after "a", so a dials them. */
const recordsOf = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    name: `b${String(i).padStart(3, '0')}`,
    addresses: [`tcp://127.0.0.1:${2000 + i}`],
    incarnation: 1,
    version: 0,
    status: 0,
  }))

/** A member that knows `n` members to dial, started: its first round (and the news) have run. */
function started(n: number) {
  const clock = manualClock()
  const dialled: string[] = []
  const up = new Set<string>()
  const m = new Membership(host(clock, dialled, up), options)
  m.receiver().Exchange({ records: recordsOf(n), want: [] }, { from: 'x' })
  m.start()
  clock.fire()
  return { clock, dialled, up, m }
}

describe('membership dial pacing', () => {
  afterEach(() => void vi.restoreAllMocks())

  it('opens up to 16 new dials a round on time, and fewer the later the round runs', () => {
    const clock = manualClock()
    const dialled: string[] = []
    const m = new Membership(host(clock, dialled), options)
    const records = recordsOf(40)
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

  it('holds 16 dials in flight: each that comes up frees its place for the next at once, not at the next round', () => {
    const { clock, dialled, up, m } = started(40)
    expect(dialled.length).toBe(16)
    // Five dials come up, 100 ms later: five more dials 10 ms after, long before the next round (750 ms at the earliest).
    clock.advance(100)
    for (const name of dialled.slice(0, 5)) {
      up.add(name)
      m.up(name)
    }
    clock.advance(10)
    expect(dialled.length).toBe(21)
    expect(new Set(dialled).size).toBe(21)
    // The 11 not up yet still hold their places until a round has passed since their dial.
    clock.advance(100)
    expect(dialled.length).toBe(21)
    void m.leave()
  })

  it('stops counting a dial in flight once a round has passed, so addresses that never answer do not hold up the rest', () => {
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const { clock, dialled, m } = started(40)
    expect(dialled.length).toBe(16)
    // None comes up. Rounds every 1,000 ms here (their jitter taken out): a dial a round old holds no place.
    clock.advance(500)
    expect(dialled.length).toBe(16)
    clock.advance(500)
    expect(dialled.length).toBe(32)
    clock.advance(1000)
    expect(dialled.length).toBe(40)
    void m.leave()
    random.mockRestore()
  })

  it('waits three rounds for a member whose turn it is to dial (its name sorts first) before dialling it itself', () => {
    // Rounds every 1,000 ms exactly (their jitter taken out): with it, four early rounds can end before 3,100 ms.
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const clock = manualClock()
    const dialled: string[] = []
    const m = new Membership(host(clock, dialled), options)
    // "A" sorts before "a" (bytewise): its turn.
    m.receiver().Exchange({ records: [{ ...recordsOf(1)[0]!, name: 'A' }], want: [] }, { from: 'x' })
    m.start()
    clock.fire()
    // The rounds at 1, 2 and 3 s: not yet (two rounds would have dialled at 3 s).
    clock.advance(3 * options.gossipInterval + 100)
    expect(dialled).toEqual([])
    clock.advance(options.gossipInterval)
    expect(dialled).toEqual(['A'])
    void m.leave()
    random.mockRestore()
  })

  it('makes at most 64 new dials between two rounds, however fast they come up', () => {
    const { clock, dialled, up, m } = started(200)
    // Every dial comes up 10 ms after it is made, until the round's 64 are spent.
    const before = dialled.length
    for (let i = 0; i < 20; i++) {
      for (const name of dialled.filter((n) => !up.has(n))) {
        up.add(name)
        m.up(name)
      }
      clock.advance(10)
    }
    expect(dialled.length).toBeLessThanOrEqual(64 + before)
    expect(dialled.length).toBeGreaterThanOrEqual(64)
    void m.leave()
  })

  it('asks a new link at once only when its peer is new to the table; links to known members wait for the rounds', () => {
    const clock = manualClock()
    const dialled: string[] = []
    const up = new Set<string>()
    const asked: string[] = []
    const m = new Membership(host(clock, dialled, up, asked), options)
    m.receiver().Exchange({ records: recordsOf(3), want: [] }, { from: 'x' })
    up.add('b000')
    m.up('b000')
    expect(asked).toEqual([])
    up.add('stranger')
    m.up('stranger')
    expect(asked).toEqual(['stranger'])
    void m.leave()
  })

  it('drops the record of a new name when the table is full of members linked to us, and counts it', () => {
    const clock = manualClock()
    const up = new Set<string>()
    const m = new Membership(host(clock, [], up), options)
    const records = recordsOf(1025).map((r, i) => ({ ...r, name: `b${String(i).padStart(4, '0')}` }))
    for (const r of records) up.add(r.name)
    for (let i = 0; i < 1024; i += 256) m.receiver().Exchange({ records: records.slice(i, i + 256), want: [] }, { from: 'x' })
    expect(m.stats()).toMatchObject({ members: 1024, recordsDropped: 0, evicted: 0 })
    // Every member in the table is up: none may be forgotten for a newcomer, which is dropped.
    m.receiver().Exchange({ records: records.slice(1024), want: [] }, { from: 'x' })
    expect(m.stats()).toMatchObject({ members: 1024, recordsDropped: 1, evicted: 0 })
    expect(m.members().some((member) => member.name === 'b1024')).toBe(false)
    // One goes down and is given up (suspectTimeout, checked at the rounds): room again, its tombstone forgotten first.
    m.start()
    up.delete('b0000')
    m.down('b0000')
    clock.advance(4000 + 2000)
    expect(m.members().find((member) => member.name === 'b0000')?.state).toBe('gone')
    m.receiver().Exchange({ records: records.slice(1024), want: [] }, { from: 'x' })
    expect(m.stats()).toMatchObject({ members: 1024, recordsDropped: 1, evicted: 1 })
    expect(m.members().find((member) => member.name === 'b1024')?.state).toBe('up')
    void m.leave()
  })

  it('forgets a member, at the next round, once authorizedKeys stops admitting its key, and stops dialling it', () => {
    const clock = manualClock()
    const dialled: string[] = []
    const up = new Set<string>()
    const revoked = new Set<string>()
    const events: [string, MemberInfo][] = []
    const disconnected: string[] = []
    const m = new Membership(
      host(clock, dialled, up, [], (name) => !revoked.has(name), events, disconnected),
      options,
    )
    m.receiver().Exchange({ records: recordsOf(3), want: [] }, { from: 'x' })
    up.add('b000')
    m.up('b000')
    m.start()
    clock.fire()
    expect(m.members().map((x) => x.name)).toEqual(['a', 'b000', 'b001', 'b002'])
    revoked.add('b000')
    revoked.add('b001')
    clock.advance(1250)
    expect(m.members().map((x) => x.name)).toEqual(['a', 'b002'])
    expect(events.filter(([kind]) => kind === 'leave').map(([, x]) => [x.name, x.why])).toEqual([
      ['b000', 'its key is no longer authorised here'],
      ['b001', 'its key is no longer authorised here'],
    ])
    expect(m.stats().recordsRefused).toBe(2)
    // b001 was being dialled (b000 dialled us): that dial is stopped.
    expect(dialled).toContain('b001')
    expect(disconnected).toEqual(['b001'])
    // Told of it again, it is refused like any record of such a key.
    m.receiver().Exchange({ records: recordsOf(2), want: [] }, { from: 'x' })
    expect(m.members().map((x) => x.name)).toEqual(['a', 'b002'])
    void m.leave()
  })
})

describe('membership news', () => {
  afterEach(() => void vi.restoreAllMocks())

  /** A member linked to p and q, at rest: rounds every 1,000 ms (jitter taken out), the first at 1,000. */
  function atRest() {
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const clock = manualClock()
    const asked: string[] = []
    const m = new Membership(host(clock, [], new Set(['p', 'q']), asked), options)
    m.start()
    clock.fire()
    clock.advance(2000)
    return { clock, asked, m }
  }
  /** A record new to the table, as an exchange brings it. */
  const newRecord = (name: string) => ({ name, addresses: ['tcp://127.0.0.1:9'], incarnation: 1, version: 0, status: 0 })

  it('at rest, only the rounds compare tables: two peers a round', () => {
    const { clock, asked, m } = atRest()
    const before = asked.length
    clock.advance(999)
    expect(asked.length).toBe(before)
    clock.advance(1)
    expect(asked.length).toBe(before + 2)
    void m.leave()
  })

  it('a change is passed on at once, then compared once more a quarter of a round after the table last changed', () => {
    const { clock, asked, m } = atRest()
    const before = asked.length
    // 100 ms after the round at 3,000: the news goes out at once (50 ms since the last spread has passed).
    clock.advance(100)
    m.receiver().Exchange({ records: [newRecord('c')], want: [] }, { from: 'p' })
    clock.advance(0)
    expect(asked.length).toBe(before + 2)
    // Another change 200 ms later: news again, and the settling comparison moves on with it.
    clock.advance(200)
    m.receiver().Exchange({ records: [newRecord('d')], want: [] }, { from: 'p' })
    clock.advance(0)
    expect(asked.length).toBe(before + 4)
    // 250 ms after the last change (not after the first): once, then nothing until the round at 4,000.
    clock.advance(249)
    expect(asked.length).toBe(before + 4)
    clock.advance(1)
    expect(asked.length).toBe(before + 6)
    clock.advance(449)
    expect(asked.length).toBe(before + 6)
    clock.advance(1)
    expect(asked.length).toBe(before + 8)
    void m.leave()
  })

  it("a settling pass on time leaves a late round's lateness, so a process behind dials no faster for it", () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const clock = manualClock()
    const dialled: string[] = []
    const m = new Membership(host(clock, dialled), options)
    m.receiver().Exchange({ records: recordsOf(60), want: [] }, { from: 'x' })
    m.start()
    clock.fire()
    clock.advance(500)
    expect(dialled.length).toBe(16)
    // The round due at 2,000 runs 400 ms late: 16 / (1 + 4 × 0.4) = 6 new dials.
    clock.jump(900)
    clock.fire()
    expect(dialled.length).toBe(22)
    // News, then the table settles on time: still 6 in flight at most, so no new dial (not 16 - 6 = 10).
    m.receiver().Exchange({ records: recordsOf(61), want: [] }, { from: 'x' })
    clock.advance(0)
    const before = dialled.length
    clock.advance(250)
    expect(dialled.length).toBe(before)
    void m.leave()
  })

  it('a member that says it leaves is news once, however often it says so', () => {
    const { clock, asked, m } = atRest()
    m.receiver().Exchange({ records: [newRecord('c')], want: [] }, { from: 'p' })
    clock.advance(1000)
    const before = asked.length
    m.receiver().Leave({ incarnation: 1 }, { from: 'c' })
    clock.advance(0)
    expect(m.members().find((x) => x.name === 'c')?.state).toBe('left')
    expect(asked.length).toBe(before + 2)
    clock.advance(100)
    m.receiver().Leave({ incarnation: 1 }, { from: 'c' })
    clock.advance(0)
    expect(asked.length).toBe(before + 2)
    void m.leave()
  })
})
