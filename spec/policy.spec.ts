/**
 * Settle policies without sockets: the pure `until` functions, and the call
 * table driven by them over links whose writer only records, with a manual
 * clock. Property tests: whatever order replies and errors arrive in, each
 * addressed peer gets exactly one result, the call ends exactly when its
 * policy says, and every straggler is CANCELLED on the wire.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Clock } from '../lib/clock.js'
import { OutgoingCalls } from '../lib/calls/outgoing.js'
import { policyFor, quorum } from '../lib/calls/policy.js'
import type { CallResult } from '../lib/calls/results.js'
import { BilateralError } from '../lib/errors.js'
import { Link } from '../lib/mesh/link.js'
import { encodeBody } from '../lib/wire/body.js'
import { Codec } from '../lib/wire/codec.js'
import { FrameType, encodeCall } from '../lib/wire/frames.js'

/** A clock whose time moves only when told. */
function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0
  const timers = new Map<number, { at: number; fn: () => void }>()
  let next = 1
  return {
    now: () => now,
    setTimer(fn, ms) {
      timers.set(next, { at: now + ms, fn })
      return next++
    },
    clearTimer: (handle) => void timers.delete(handle as number),
    hold: () => () => {},
    advance(ms) {
      now += ms
      for (const [handle, timer] of [...timers]) {
        if (timer.at <= now && timers.delete(handle)) timer.fn()
      }
    },
  }
}

describe('policies', () => {
  it('{ ok: k } is done exactly when k replies are in or can no longer arrive', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.nat(25), fc.nat(25), (k, ok, pending) => {
        expect(quorum(k).done({ ok, pending, results: [] })).toBe(ok >= k || ok + pending < k)
      }),
    )
  })

  it("'first-ok' is { ok: 1 }; a function sees the results; anything else is a TypeError", () => {
    fc.assert(
      fc.property(fc.nat(5), fc.nat(5), (ok, pending) => {
        expect(policyFor('first-ok')!.done({ ok, pending, results: [] })).toBe(quorum(1).done({ ok, pending, results: [] }))
      }),
    )
    const seen: (readonly CallResult[])[] = []
    const policy = policyFor((results: readonly CallResult[]) => (seen.push(results), results.length === 2))!
    expect(policy.needsResults).toBe(true)
    const one: CallResult = { from: 'a', ok: true, reply: 1 }
    expect(policy.done({ ok: 1, pending: 1, results: [one] })).toBe(false)
    expect(policy.done({ ok: 2, pending: 0, results: [one, one] })).toBe(true)
    expect(seen).toHaveLength(2)
    expect(policyFor(undefined)).toBeUndefined()
    for (const bad of [{ ok: 0 }, { ok: -1 }, { ok: 2.5 }, { ok: '2' }, 'all', 1, null, []]) expect(() => policyFor(bad)).toThrow(TypeError)
  })
})

/** n links, peers p0…p(n−1), each recording what is posted on it; `lifecycle` says which announced a callTimeout. */
function links(lifecycle: boolean[], clock: Clock): { links: Link[]; posted: Uint8Array[][][] } {
  const posted: Uint8Array[][][] = lifecycle.map(() => [])
  const made = lifecycle.map(
    (reads, i) =>
      new Link(
        `p${i}`,
        'outbound',
        { callTimeout: reads ? 2000 : undefined },
        (parts) => (posted[i]!.push(parts), Promise.resolve('sent' as const)),
        { window: { messages: 64, bytes: 1 << 20 }, backlog: 1 << 20, queue: 1000 },
        clock.now(),
      ),
  )
  return { links: made, posted }
}

const codec = new Codec()
/** The frame types posted on a link (each batch decoded). */
const typesPosted = (batches: Uint8Array[][]): number[] => batches.flatMap((parts) => codec.decodeMessage(parts).map((f) => f.type))

describe('the call table under a policy', () => {
  const until = fc.oneof(
    fc.constant(undefined),
    fc.constant('first-ok' as const),
    fc.integer({ min: 1, max: 7 }).map((ok) => ({ ok })),
  )
  const scenario = fc.integer({ min: 1, max: 6 }).chain((n) =>
    fc.record({
      until,
      lifecycle: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
      // Each peer's answer, and the order they come in.
      answers: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
      order: fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n }),
      // How many peers named in `to` are not connected (their NOT_CONNECTED results come first).
      absent: fc.nat(2),
      // After how many answers the caller aborts (beyond n: never).
      abortAfter: fc.nat(n + 2),
    }),
  )

  it('each peer gets exactly one result; the call ends exactly when its policy says; stragglers get CANCELLED and a CANCEL', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ until, lifecycle, answers, order, absent, abortAfter }) => {
        const clock = manualClock()
        const table = new OutgoingCalls(clock, codec)
        const { links: targets, posted } = links(lifecycle, clock)
        const results: CallResult[] = []
        let ends = 0
        let endedAfter = -1
        const policy = policyFor(until)
        const controller = new AbortController()
        const early: CallResult[] = [...Array(absent).keys()].map((i) => ({
          from: `gone${i}`,
          ok: false,
          error: new BilateralError('NOT_CONNECTED', 'not connected'),
        }))
        const sink = {
          result: (r: CallResult) => void results.push(r),
          end: () => void (ends++, (endedAfter = results.length)),
        }
        const started = table.start(targets, { method: 'P.M', timeout: 1000, early, site: {}, sink, policy, signals: [controller.signal] })
        // The model: walk the answers in order, and find where the policy (or the abort) stops the call.
        const k = until === undefined ? undefined : until === 'first-ok' ? 1 : until.ok
        const stops = (ok: number, pending: number): boolean => k !== undefined && (ok >= k || ok + pending < k)
        let ok = 0
        let expectedEnd = stops(0, targets.length) ? 0 : -1
        if (started !== undefined) {
          for (const link of targets) link.post([encodeCall(started.id, 'M.m'), encodeBody(null)], started.tag)
        }
        for (let step = 0; step < order.length && expectedEnd < 0; step++) {
          if (step === abortAfter) {
            controller.abort()
            expectedEnd = step
            break
          }
          const i = order[step]!
          if (answers[i]) {
            ok++
            table.reply(targets[i]!, started!.id, encodeBody(i))
          } else table.error(targets[i]!, { type: FrameType.ERROR, id: started!.id, code: 'REMOTE', name: 'Error', message: 'no' })
          if (step === order.length - 1 || stops(ok, order.length - step - 1)) expectedEnd = step + 1
        }
        if (expectedEnd < 0 && abortAfter === order.length) {
          controller.abort()
          expectedEnd = order.length
        }
        await new Promise((resolve) => setImmediate(resolve))
        // Exactly one result per addressed peer, the early ones first, one end.
        expect(ends).toBe(1)
        expect(endedAfter).toBe(results.length)
        expect(results.map((r) => r.from).sort()).toEqual([...early.map((e) => e.from), ...targets.map((l) => l.peer)].sort())
        expect(results.slice(0, absent).map((r) => r.from)).toEqual(early.map((e) => e.from))
        // Answers counted until the end; every peer after it CANCELLED.
        const answered = results.slice(absent).filter((r) => r.ok || r.error.code === 'REMOTE')
        expect(answered).toHaveLength(expectedEnd)
        const cancelled = results.filter((r) => !r.ok && r.error.code === 'CANCELLED').map((r) => r.from)
        expect(cancelled).toHaveLength(targets.length - expectedEnd)
        // A CANCEL went to each cancelled peer that reads it, after its CALL, and to no other; nothing at all if nothing was sent.
        for (const [i, link] of targets.entries()) {
          const types = typesPosted(posted[i]!)
          const wantCancel = started !== undefined && cancelled.includes(link.peer) && lifecycle[i]
          expect(types).toEqual(started === undefined ? [] : wantCancel ? [FrameType.CALL, FrameType.CANCEL] : [FrameType.CALL])
        }
        expect(table.size).toBe(0)
        expect(table.peersWaited).toBe(0)
        expect(table.queueCount).toBe(0)
        // Answers after the end settle nothing.
        if (started !== undefined) for (const link of targets) table.reply(link, started.id, encodeBody(0))
        expect(results).toHaveLength(absent + targets.length)
      }),
      { numRuns: 300 },
    )
  })

  it('an until function that ends its own call (aborting its signal) ends it once, and other calls still time out', () => {
    const clock = manualClock()
    const table = new OutgoingCalls(clock, codec)
    const { links: targets } = links([true, true], clock)
    const controller = new AbortController()
    let ends = 0
    const first: CallResult[] = []
    const started = table.start(targets, {
      method: 'P.M',
      timeout: 500,
      early: [],
      site: {},
      sink: { result: (r) => first.push(r), end: () => void ends++ },
      policy: policyFor(() => (controller.abort(), true)),
      signals: [controller.signal],
    })!
    const second: CallResult[] = []
    table.start(targets, { method: 'P.M', timeout: 500, early: [], site: {}, sink: { result: (r) => second.push(r), end: () => {} } })
    table.reply(targets[0]!, started.id, encodeBody(1))
    expect(ends).toBe(1)
    expect(first.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['ok', 'CANCELLED'])
    clock.advance(500)
    expect(second.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['TIMEOUT', 'TIMEOUT'])
    expect([table.size, table.peersWaited, table.queueCount, table.signalsWatched]).toEqual([0, 0, 0, 0])
  })

  it('a quorum whose peers time out or close gets TIMEOUT or CLOSED for each, not CANCELLED, and sends no CANCEL', async () => {
    for (const end of ['timeout', 'close'] as const) {
      const clock = manualClock()
      const table = new OutgoingCalls(clock, codec)
      const { links: targets, posted } = links([true, true, true], clock)
      const results: CallResult[] = []
      const started = table.start(targets, {
        method: 'P.M',
        timeout: 500,
        early: [],
        site: {},
        sink: { result: (r) => results.push(r), end: () => {} },
        policy: policyFor({ ok: 2 }),
      })!
      for (const link of targets) link.post([encodeCall(started.id, 'M.m'), encodeBody(null)], started.tag)
      if (end === 'timeout') clock.advance(500)
      else table.failAll('CLOSED', 'closed')
      expect(results.map((r) => !r.ok && r.error.code)).toEqual(
        end === 'timeout' ? ['TIMEOUT', 'TIMEOUT', 'TIMEOUT'] : ['CLOSED', 'CLOSED', 'CLOSED'],
      )
      await new Promise((resolve) => setImmediate(resolve))
      for (const batches of posted) expect(typesPosted(batches)).toEqual([FrameType.CALL])
    }
  })

  it('a signal whose reason has no string form still cancels', () => {
    const clock = manualClock()
    const table = new OutgoingCalls(clock, codec)
    const { links: targets } = links([true], clock)
    const results: CallResult[] = []
    const controller = new AbortController()
    const start = () =>
      table.start(targets, {
        method: 'P.M',
        timeout: 500,
        early: [],
        site: {},
        sink: { result: (r) => results.push(r), end: () => {} },
        signals: [controller.signal],
      })
    start()
    controller.abort(Object.create(null))
    expect(results.map((r) => !r.ok && r.error.code)).toEqual(['CANCELLED'])
    // Already aborted: nothing is sent, and nothing is left in the table.
    expect(start()).toBeUndefined()
    expect([table.size, table.peersWaited, table.signalsWatched]).toEqual([0, 0, 0])
  })

  it('a timeout gives every peer still waiting TIMEOUT and empties the table', () => {
    const clock = manualClock()
    const table = new OutgoingCalls(clock, codec)
    const { links: targets } = links([true, false, true], clock)
    const results: CallResult[] = []
    const started = table.start(targets, {
      method: 'P.M',
      timeout: 500,
      early: [],
      site: {},
      sink: { result: (r) => results.push(r), end: () => {} },
    })!
    table.reply(targets[1]!, started.id, encodeBody('one'))
    clock.advance(499)
    expect(results).toHaveLength(1)
    clock.advance(1)
    expect(results.map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['ok', 'TIMEOUT', 'TIMEOUT'])
    expect([table.size, table.peersWaited, table.queueCount]).toEqual([0, 0, 0])
  })
})

describe('an until function with side effects', () => {
  it('aborting the call’s own signal while asked about the early results settles the call at once, with nothing sent', () => {
    const clock = manualClock()
    const table = new OutgoingCalls(clock, codec)
    const { links: targets } = links([true], clock)
    const controller = new AbortController()
    const results: CallResult[] = []
    let ends = 0
    const started = table.start(targets, {
      method: 'P.M',
      timeout: 500,
      early: [{ from: 'ghost', ok: false, error: new BilateralError('NOT_CONNECTED', 'not connected') }],
      site: {},
      sink: { result: (r) => results.push(r), end: () => void ends++ },
      policy: policyFor(() => (controller.abort(), false)),
      signals: [controller.signal],
    })
    expect(started).toBeUndefined()
    expect(results.map((r) => !r.ok && r.error.code)).toEqual(['NOT_CONNECTED', 'CANCELLED'])
    expect(ends).toBe(1)
    expect([table.size, table.peersWaited, table.queueCount, table.signalsWatched]).toEqual([0, 0, 0, 0])
  })
})
