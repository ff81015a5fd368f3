// Interceptors both ways, and the metrics built on them. Real nodes on loopback.
import { afterEach, describe, expect, it } from 'vitest'
import { BilateralError, RemoteError, type InboundCall, type InboundOutcome, type OutboundCall } from '../lib/index.js'
import type { CallResult } from '../lib/index.js'
import { closeAll, deferred, makeNode, pair } from './helpers.js'

afterEach(closeAll)

describe('interceptors', () => {
  it('see every call, stream, request and cast in both directions, with each result, its time and size', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const out: OutboundCall[] = []
    const results: [string, CallResult, { ms: number; bytes: number }][] = []
    const into: InboundCall[] = []
    const ends: [string, InboundOutcome][] = []
    a.use({ outbound: (call) => (out.push(call), (result, ms, bytes) => results.push([call.method, result, { ms, bytes }])) })
    b.use({ inbound: (call) => (into.push(call), (outcome) => ends.push([call.method, outcome])) })
    const cast = deferred()
    b.register({ Echo: (x: unknown) => x, Fail: () => Promise.reject(new Error('no')), Note: () => cast.resolve() }, 'Svc')
    await pair(a, b)
    await a.call(['b'], 'Svc.Echo', 'hello')
    await a.request('b', 'Svc.Fail').catch(() => {})
    for await (const _ of a.stream(['b'], 'Svc.Echo', 1)) void _
    await a.cast(['b'], 'Svc.Note', null)
    await cast.promise
    expect(out.map((c) => [c.method, c.to, c.cast])).toEqual([
      ['Svc.Echo', ['b'], false],
      ['Svc.Fail', ['b'], false],
      ['Svc.Echo', ['b'], false],
      ['Svc.Note', ['b'], true],
    ])
    expect(out[0]!.bytes).toBe(6) // 'hello' as msgpack
    expect(results.map(([m, r]) => [m, r.ok])).toEqual([
      ['Svc.Echo', true],
      ['Svc.Fail', false],
      ['Svc.Echo', true],
      ['Svc.Note', true], // a cast's one result a peer: handed over
    ])
    expect(results[0]![2].bytes).toBe(6)
    expect(results.every(([, , took]) => took.ms >= 0)).toBe(true)
    await expect.poll(() => ends.length).toBe(4)
    expect(into.map((c) => [c.method, c.from, c.cast])).toEqual([
      ['Svc.Echo', 'a', false],
      ['Svc.Fail', 'a', false],
      ['Svc.Echo', 'a', false],
      ['Svc.Note', 'a', true],
    ])
    expect(ends.map(([m, o]) => [m, o.ok, o.code])).toEqual([
      ['Svc.Echo', true, undefined],
      ['Svc.Fail', false, 'REMOTE'],
      ['Svc.Echo', true, undefined],
      ['Svc.Note', true, undefined],
    ])
    expect(ends[0]![1].bytes).toBe(6)
  })

  it('can refuse a call either side: outbound, the caller gets the error and nothing is sent; inbound, the handler does not run', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    let ran = 0
    b.register({ Echo: (x: unknown) => (ran++, x) }, 'Svc')
    await pair(a, b)
    const stop = a.use({
      outbound: (call) => {
        if (call.method === 'Svc.Echo' && (call.options as { meta?: object }).meta === undefined) {
          throw new BilateralError('INVALID_ARGUMENT', 'calls need a trace id')
        }
      },
    })
    await expect(a.call(['b'], 'Svc.Echo', 1)).rejects.toThrow('calls need a trace id')
    await expect(a.request('b', 'Svc.Echo', 1)).rejects.toThrow('calls need a trace id')
    expect(await a.request('b', 'Svc.Echo', 1, { meta: { traceparent: 't' } })).toBe(1)
    expect(ran).toBe(1)
    stop()
    b.use({
      inbound: (call) => {
        if (call.ctx.meta['token'] !== 'sesame') throw Object.assign(new Error('forbidden'), { code: 'E_FORBIDDEN' })
      },
    })
    const refused = await a.request('b', 'Svc.Echo', 2).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(RemoteError)
    expect(refused).toMatchObject({ remoteCode: 'E_FORBIDDEN', remoteMessage: 'forbidden' })
    expect(await a.request('b', 'Svc.Echo', 3, { meta: { token: 'sesame' } })).toBe(3)
    expect(ran).toBe(2)
  })

  it('an observer that throws does not reach the call; bad interceptors are refused', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register({ Echo: (x: unknown) => x }, 'Svc')
    await pair(a, b)
    a.use({
      outbound: () => () => {
        throw new Error('observer bug')
      },
    })
    expect(await a.request('b', 'Svc.Echo', 1)).toBe(1)
    expect(() => a.use({ outbund: () => {} } as never)).toThrow('"outbund" is not an option of use(); did you mean outbound?')
    expect(() => a.use({ outbound: 1 } as never)).toThrow('must be functions')
  })
})

describe('interceptors, attacked', () => {
  it('an async interceptor refuses the call it cannot check in time, either way, and nothing is left unhandled', async () => {
    const a = makeNode('a', { metrics: true })
    const b = makeNode('b', { metrics: true })
    let ran = 0
    b.register({ Secret: () => (ran++, 'secret') }, 'Svc')
    await pair(a, b)
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const stop = a.use({ outbound: (async () => {}) as never })
      await expect(a.request('b', 'Svc.Secret')).rejects.toThrow('an interceptor returned a promise')
      stop()
      await new Promise((resolve) => setImmediate(resolve))
      b.use({
        inbound: (async () => {
          throw new Error('forbidden')
        }) as never,
      })
      await expect(a.request('b', 'Svc.Secret')).rejects.toMatchObject({ code: 'REMOTE', remoteName: 'TypeError' })
      await new Promise((resolve) => setImmediate(resolve))
      expect(ran).toBe(0)
      expect(unhandled).toEqual([])
      // Metrics, which ran before the refusing hook, saw each call end: nothing left in flight.
      expect(a.metrics().outbound.peers['b']).toMatchObject({ inflight: 0 })
      expect(a.metrics().outbound.methods['Svc.Secret']!.outcomes).toMatchObject({ INVALID_ARGUMENT: 1 })
      expect(b.metrics().inbound.methods['Svc.Secret']).toMatchObject({ inflight: 0, outcomes: { REMOTE: 1 } })
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('casts count one result a peer; a handler that ends after close() is told CLOSED; a hook removing itself skips no other', async () => {
    const a = makeNode('a', { metrics: true })
    const b = makeNode('b')
    const c = makeNode('c')
    const slow = deferred()
    b.register({ Note: () => {}, Slow: () => slow.promise }, 'Svc')
    c.register({ Note: () => {} }, 'Svc')
    await pair(a, b)
    await pair(a, c)
    await a.cast([], 'Svc.Note', null)
    expect(a.metrics().outbound.methods['Svc.Note']).toMatchObject({ calls: 1, outcomes: { OK: 2 }, inflight: 0 })
    expect(a.metrics().outbound.peers['b']).toMatchObject({ calls: 1, outcomes: { OK: 1 }, inflight: 0 })

    const order: string[] = []
    const stopX = a.use({ outbound: () => void (order.push('X'), stopX()) })
    a.use({ outbound: () => void order.push('Y') })
    await a.request('b', 'Svc.Note')
    await a.request('b', 'Svc.Note')
    expect(order).toEqual(['X', 'Y', 'Y'])

    const ends: InboundOutcome[] = []
    b.use({ inbound: () => (outcome) => ends.push(outcome) })
    const pending = a.call(['b'], 'Svc.Slow', null, { timeout: 5000 })
    await expect.poll(() => b.stats().running).toBe(1)
    await b.close()
    slow.resolve()
    await pending
    await expect.poll(() => ends.length).toBe(1)
    expect(ends[0]).toMatchObject({ ok: false, code: 'CLOSED' })
  })
})

describe('metrics', () => {
  it('count what was called, both ways, per method and per peer; the Prometheus text parses and agrees', async () => {
    const a = makeNode('a', { metrics: true })
    const b = makeNode('b', { metrics: true })
    b.register({ Echo: (x: unknown) => x, Hang: () => new Promise(() => {}) }, 'Svc')
    await pair(a, b)
    for (let i = 0; i < 5; i++) await a.request('b', 'Svc.Echo', 'x'.repeat(10))
    await a.call(['b'], 'Svc.Missing')
    await a.call(['b'], 'Svc.Missing')
    await a.call(['b'], 'Svc.Hang', null, { timeout: 30 })
    await a.call(['b', 'nobody'], 'Svc.Echo', 1)
    const m = a.metrics()
    expect(m.outbound.methods['Svc.Echo']).toMatchObject({ calls: 6, outcomes: { OK: 6, NOT_CONNECTED: 1 }, inflight: 0 })
    expect(m.outbound.methods['Svc.Missing']).toMatchObject({ calls: 2, outcomes: { NO_SUCH_METHOD: 2 } })
    expect(m.outbound.methods['Svc.Hang']).toMatchObject({ calls: 1, outcomes: { TIMEOUT: 1 }, inflight: 0 })
    expect(m.outbound.peers['b']).toMatchObject({ calls: 9, outcomes: { OK: 6, NO_SUCH_METHOD: 2, TIMEOUT: 1 } })
    expect(m.outbound.methods['Svc.Echo']!.bytesOut).toBe(5 * 11 + 2 * 1)
    expect(m.outbound.methods['Svc.Echo']!.bytesIn).toBe(5 * 11 + 1)
    const echo = m.outbound.methods['Svc.Echo']!
    expect(echo.buckets.reduce((s, n) => s + n, 0)).toBe(7)

    const served = b.metrics()
    expect(served.inbound.methods['Svc.Echo']).toMatchObject({ calls: 6, outcomes: { OK: 6 }, inflight: 0 })
    expect(served.inbound.methods['(other)']).toMatchObject({ calls: 2, outcomes: { NO_SUCH_METHOD: 2 } })
    expect(served.inbound.methods['Svc.Hang']).toMatchObject({ calls: 1, inflight: 1 })
    expect(served.inbound.peers['a']).toMatchObject({ calls: 9 })

    const text = a.metricsText()
    const samples = parsePrometheus(text)
    expect(samples.get('bilateral_calls_total{direction="out",method="Svc.Echo",outcome="OK"}')).toBe(6)
    expect(samples.get('bilateral_calls_total{direction="out",peer="b",outcome="TIMEOUT"}')).toBe(1)
    expect(samples.get('bilateral_call_duration_seconds_count{direction="out",method="Svc.Echo"}')).toBe(7)
    expect(samples.get('bilateral_call_duration_seconds_bucket{direction="out",method="Svc.Echo",le="+Inf"}')).toBe(7)
    // The same figures answer $node.Stats to whom it is served.
    const ops = makeNode('ops')
    const c = makeNode('c', { metrics: true, introspection: { methods: ['Stats'], peers: ['ops'] } })
    c.register({ Echo: (x: unknown) => x }, 'Svc')
    await pair(ops, c)
    await ops.request('c', 'Svc.Echo', 1)
    const stats = (await ops.request('c', '$node.Stats')) as { metrics: { inbound: { methods: Record<string, { calls: number }> } } }
    expect(stats.metrics.inbound.methods['Svc.Echo']!.calls).toBe(1)
  })

  it('are off by default, and say so', () => {
    const a = makeNode('a')
    expect(() => a.metrics()).toThrow('metrics are off')
    expect(() => a.metricsText()).toThrow('metrics are off')
  })
})

/**
 * A strict reader of the Prometheus text format: every family has HELP and
 * TYPE before its samples; each sample is `name{labels} value`; histogram
 * buckets are cumulative and end with +Inf equal to _count. Returns samples
 * keyed by `name{labels}` with labels in order.
 */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>()
  const typed = new Map<string, string>()
  let helped: string | undefined
  expect(text.endsWith('\n')).toBe(true)
  for (const line of text.slice(0, -1).split('\n')) {
    const help = /^# HELP (\w+) .+$/.exec(line)
    if (help !== null) {
      helped = help[1]
      continue
    }
    const type = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line)
    if (type !== null) {
      expect(type[1]).toBe(helped)
      typed.set(type[1]!, type[2]!)
      continue
    }
    const sample = /^(\w+)\{((?:\w+="(?:[^"\\]|\\.)*",?)*)\} (-?[\d.e+-]+|\+Inf)$/.exec(line)
    expect(sample, `a sample line: ${line}`).not.toBeNull()
    const family = sample![1]!.replace(/_(bucket|sum|count)$/, '')
    expect(typed.has(family) || typed.has(sample![1]!), `${line} has a TYPE`).toBe(true)
    samples.set(`${sample![1]}{${sample![2]}}`, Number(sample![3]))
  }
  for (const [key, count] of samples) {
    const m = /^(\w+)_count\{(.*)\}$/.exec(key)
    if (m === null) continue
    const buckets = [...samples].filter(([k]) => k.startsWith(`${m[1]}_bucket{${m[2]},le=`)).map(([, v]) => v)
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1]!)
    expect(buckets.at(-1)).toBe(count)
  }
  return samples
}
