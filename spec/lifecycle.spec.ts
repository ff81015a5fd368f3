/**
 * Calls with a lifecycle, on real sockets: cancellation that reaches the
 * remote handler, deadlines on the wire, nested calls that inherit them,
 * quorum that stops the stragglers, stream(), metadata, and the table of
 * running handlers that every exit path empties.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { getEventListeners } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { BilateralError, type Bilateral, type CallContext } from '../lib/index.js'
import { closeAll, deferred, ensureBuilt, makeNode, nextEvent, pair, within } from './helpers.js'

const RELEASE = fileURLToPath(new URL('./fixtures/release.mjs', import.meta.url))
const DIST = fileURLToPath(new URL('../dist', import.meta.url))
const children: ChildProcess[] = []

beforeAll(ensureBuilt)
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  await closeAll()
})

/** What happened, in order, and a bounded wait for the next of it: nothing is lost when two happen in one turn. */
class Happenings<T> {
  readonly all: T[] = []
  private taken = 0
  private wake: (() => void) | undefined

  push(value: T): void {
    this.all.push(value)
    this.wake?.()
  }

  /** The first one not taken yet, waiting up to 5 s for it. */
  async next(what: string): Promise<T> {
    while (this.taken === this.all.length) await bounded(new Promise<void>((resolve) => (this.wake = resolve)), what)
    return this.all[this.taken++]!
  }
}

/** A receiver whose `Wait` runs until its ctx.signal aborts, reporting each start and each abort. */
class Waiter {
  private readonly starts = new Happenings<CallContext>()
  private readonly aborts = new Happenings<BilateralError>()
  readonly started = this.starts.all
  readonly aborted = this.aborts.all

  Wait(_: unknown, ctx: CallContext): Promise<string> {
    this.starts.push(ctx)
    return new Promise((resolve) => {
      ctx.signal.addEventListener('abort', () => {
        this.aborts.push(ctx.signal.reason as BilateralError)
        resolve('aborted')
      })
    })
  }

  Quick(n: number): number {
    return n
  }

  /** The next handler to start, within 5 s. */
  nextStart(): Promise<CallContext> {
    return this.starts.next('a handler to start')
  }

  /** The next abort's reason, within 5 s. */
  nextAbort(): Promise<BilateralError> {
    return this.aborts.next('a handler to be aborted')
  }
}

/** `promise`, or a rejection naming `what` after `ms` (5 s). */
const bounded = <T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> => within(promise, ms, what)

/** Resolves once `node.stats()` satisfies `ok` (polled on each turn of the event loop), within 5 s. */
async function until(node: Bilateral, ok: (s: ReturnType<Bilateral['stats']>) => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 5000
  while (!ok(node.stats())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within 5000 ms (${JSON.stringify(node.stats())})`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

async function callerAndServer() {
  const alpha = makeNode('alpha')
  const beta = makeNode('beta')
  const waiter = new Waiter()
  beta.register(waiter, 'W')
  await pair(alpha, beta)
  return { alpha, beta, waiter }
}

describe('cancelling a call with its signal', () => {
  it('a signal aborted before the call sends nothing: each peer gets CANCELLED and no handler runs', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const results = await alpha.call(['beta'], 'W.Wait', null, { signal: AbortSignal.abort(new Error('changed my mind')) })
    expect(results).toHaveLength(1)
    expect(results[0]).toMatchObject({ from: 'beta', ok: false, error: { code: 'CANCELLED' } })
    expect((results[0] as { error: Error }).error.message).toContain('changed my mind')
    // The link is ordered: a later call's answer means the first was never sent.
    expect(await alpha.call(['beta'], 'W.Quick', 7)).toEqual([{ from: 'beta', ok: true, reply: 7 }])
    expect(waiter.started).toHaveLength(0)
    expect(alpha.stats()).toMatchObject({ pending: 0, inflight: 0 })
    expect(beta.stats().running).toBe(0)
  })

  it('aborting in flight settles the call at once, and the remote handler’s ctx.signal aborts with CANCELLED', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const controller = new AbortController()
    const call = alpha.call(['beta'], 'W.Wait', null, { signal: controller.signal, timeout: 60_000 })
    await waiter.nextStart()
    expect(beta.stats().running).toBe(1)
    controller.abort()
    const results = await bounded(call, 'the cancelled call to settle', 1000)
    expect(results).toMatchObject([{ from: 'beta', ok: false, error: { code: 'CANCELLED' } }])
    const reason = await waiter.nextAbort()
    expect(reason).toBeInstanceOf(BilateralError)
    expect(reason.code).toBe('CANCELLED')
    // The handler's answer is dropped where it ran, and counted there.
    await until(beta, (s) => s.running === 0 && s.cancelledAnswers === 1, 'the aborted handler to leave the table')
    expect(alpha.stats()).toMatchObject({ pending: 0, inflight: 0, strayReplies: 0 })
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
  })

  it('aborting after the call settled changes nothing and sends nothing', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const controller = new AbortController()
    const results = await alpha.call(['beta'], 'W.Quick', 5, { signal: controller.signal })
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
    controller.abort()
    expect(results).toEqual([{ from: 'beta', ok: true, reply: 5 }])
    expect(await alpha.call(['beta'], 'W.Quick', 6)).toEqual([{ from: 'beta', ok: true, reply: 6 }])
    expect(waiter.aborted).toHaveLength(0)
    expect(beta.stats()).toMatchObject({ running: 0, cancelledAnswers: 0 })
  })

  it('a signal that is not an AbortSignal is a TypeError', async () => {
    const { alpha } = await callerAndServer()
    await expect(alpha.call(['beta'], 'W.Quick', 1, { signal: {} as AbortSignal })).rejects.toBeInstanceOf(TypeError)
  })

  it('10,000 cancelled calls leave every table at zero on both sides', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const controller = new AbortController()
    const calls: Promise<unknown>[] = []
    for (let i = 0; i < 10_000; i++) calls.push(alpha.call(['beta'], 'W.Wait', i, { signal: controller.signal, timeout: 60_000 }))
    await waiter.nextStart()
    // One listener on the shared signal, however many calls it may cancel (an AbortSignal warns beyond 10).
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1)
    expect(alpha.stats().signals).toBe(1)
    controller.abort()
    const results = (await bounded(Promise.all(calls), 'the cancelled calls to settle')) as { ok: boolean; error: BilateralError }[][]
    expect(results.every((r) => r.length === 1 && !r[0]!.ok && ['CANCELLED', 'OVERLOADED'].includes(r[0]!.error.code))).toBe(true)
    expect(results.filter((r) => r[0]!.error.code === 'CANCELLED').length).toBeGreaterThan(0)
    await until(beta, (s) => s.running === 0 && s.runningBytes === 0 && s.runningPeers === 0, 'the handlers to be aborted')
    expect(alpha.stats()).toMatchObject({ pending: 0, timerQueues: 0, inflight: 0, signals: 0 })
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
    expect(beta.stats().cancelledAnswers).toBe(waiter.aborted.length)
  })
})

describe('deadlines on the wire', () => {
  it('the handler sees the caller’s deadline, and its signal aborts with TIMEOUT when it passes', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const before = Date.now()
    const call = alpha.call(['beta'], 'W.Wait', null, { timeout: 300 })
    const ctx = await waiter.nextStart()
    expect(ctx.deadline).toBeGreaterThan(before)
    expect(ctx.deadline).toBeLessThanOrEqual(Date.now() + 300)
    const reason = await waiter.nextAbort()
    expect(reason.code).toBe('TIMEOUT')
    expect(Date.now()).toBeGreaterThanOrEqual(ctx.deadline! - 5)
    expect(await call).toMatchObject([{ from: 'beta', ok: false, error: { code: 'TIMEOUT' } }])
    await until(beta, (s) => s.running === 0 && s.lateAnswers === 1, 'the late answer to be dropped')
  })

  it('a call with the default timeout carries none on the wire, and the handler still sees it', async () => {
    const { alpha, waiter } = await callerAndServer()
    const before = Date.now()
    const call = alpha.call(['beta'], 'W.Wait', null)
    const ctx = await waiter.nextStart()
    // The default is what alpha announced in its JOIN (callTimeout 2000).
    expect(ctx.deadline! - before).toBeGreaterThan(1500)
    expect(ctx.deadline! - before).toBeLessThanOrEqual(2100)
    await call
  })

  it('a cast has no deadline, and its signal aborts only on close or the caller going down', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    await alpha.cast(['beta'], 'W.Wait', null)
    const ctx = await waiter.nextStart()
    expect(ctx.cast).toBe(true)
    expect(ctx.deadline).toBeUndefined()
    await alpha.close()
    expect((await waiter.nextAbort()).code).toBe('PEER_DOWN')
    await until(beta, (s) => s.running === 0, 'the cast to leave the table')
  })
})

describe('the handlers running for a caller', () => {
  it('are aborted with PEER_DOWN when the caller parts', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const call = alpha.call(['beta'], 'W.Wait', null, { timeout: 60_000 })
    await waiter.nextStart()
    await alpha.disconnect('beta')
    expect(await call).toMatchObject([{ ok: false, error: { code: 'PEER_DOWN' } }])
    const reason = await waiter.nextAbort()
    expect(reason.code).toBe('PEER_DOWN')
    expect(reason.message).toContain('PART')
    await until(beta, (s) => s.running === 0 && s.runningPeers === 0, 'the table to empty')
  })

  it('are aborted with PEER_DOWN when the caller’s process dies (its connection is gone: HEARTBEAT)', async () => {
    const node = makeNode('svc')
    const waiter = new Waiter()
    node.register(waiter, 'W')
    const endpoint = await node.listen('tcp://127.0.0.1:*')
    const child = spawn(process.execPath, [RELEASE, 'dial', 'doomed', 'svc', endpoint], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, BILATERAL_DIST: DIST },
    })
    children.push(child)
    const ready = deferred<string>()
    createInterface({ input: child.stdout! }).once('line', ready.resolve)
    expect(await bounded(ready.promise, 'the child to join', 10_000)).toBe('ready')
    // The child's handler calls back: our W.Wait runs for it.
    void node.call(['doomed'], 'Old.Ask', { peer: 'svc', method: 'W.Wait', args: null }, { timeout: 30_000 })
    const ctx = await waiter.nextStart()
    expect(ctx.from).toBe('doomed')
    const down = nextEvent<[string, string]>(node, 'peer:down', 10_000)
    child.kill('SIGKILL')
    expect((await down)[1]).toBe('HEARTBEAT')
    const reason = await waiter.nextAbort()
    expect(reason.code).toBe('PEER_DOWN')
    expect(reason.message).toContain('HEARTBEAT')
    await until(node, (s) => s.running === 0 && s.repliesDropped === 1, 'the table to empty')
  })

  it('are all aborted with CLOSED by close(), which leaves the tables at zero', async () => {
    const { alpha, beta, waiter } = await callerAndServer()
    const calls = [1, 2, 3].map((i) => alpha.call(['beta'], 'W.Wait', i, { timeout: 60_000 }))
    while (waiter.started.length < 3) await waiter.nextStart()
    await beta.close()
    expect(waiter.aborted.map((r) => r.code)).toEqual(['CLOSED', 'CLOSED', 'CLOSED'])
    expect(beta.stats()).toMatchObject({ running: 0, runningBytes: 0, runningPeers: 0, pending: 0 })
    for (const results of await Promise.all(calls)) expect(results).toMatchObject([{ ok: false, error: { code: 'PEER_DOWN' } }])
  })
})

describe('the stallTimeout a listener announces', () => {
  it('keeps a dialler whose own pingInterval is longer in time: it sends within it', async () => {
    // Without the announcement this dialler would TICK every 3 s, and the listener would drop it after 800 ms of silence.
    const dialler = makeNode('slowpinger', { pingInterval: 3000, peerTimeout: 6000, stallTimeout: 60_000 })
    const listener = makeNode('strict', { stallTimeout: 800 })
    await pair(dialler, listener)
    const down = nextEvent(listener, 'peer:down', 4000).then(
      (args) => args,
      () => undefined,
    )
    // Five stall periods: any TIMEOUT would have come.
    expect(await down).toBeUndefined()
    expect(listener.activeConnections()).toEqual(['slowpinger'])
  })
})

describe('nested calls', () => {
  async function chain() {
    const a = makeNode('a')
    const b = makeNode('b')
    const c = makeNode('c')
    const waiter = new Waiter()
    c.register(waiter, 'W')
    const seen: { detach: CallContext[] } = { detach: [] }
    b.register(
      {
        Relay: (opts: { detach?: boolean; timeout?: number }, ctx: CallContext) =>
          ctx.call(['c'], 'W.Wait', null, { detach: opts.detach, timeout: opts.timeout, meta: { hop: 'b' } }),
        Tell: (_: unknown, ctx: CallContext) => ctx.tell(['c'], 'W.Wait', null),
      },
      'B',
    )
    await pair(a, b)
    await pair(b, c)
    return { a, b, c, waiter, seen }
  }

  it('C sees B’s deadline, no later than A’s but for transit; the forwarded trace keys and not the others; A’s abort reaches C', async () => {
    const { a, b, waiter } = await chain()
    let outer: number | undefined
    b.register(
      { Relay: (_: unknown, ctx: CallContext) => ((outer = ctx.deadline), ctx.call(['c'], 'W.Wait', null, { meta: { hop: 'b' } })) },
      'B2',
    )
    const controller = new AbortController()
    const before = Date.now()
    const call = a.call(
      ['b'],
      'B2.Relay',
      {},
      {
        timeout: 800,
        signal: controller.signal,
        meta: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', secret: 'not forwarded' },
      },
    )
    const ctx = await waiter.nextStart()
    expect(ctx.from).toBe('b')
    // Each hop inherits exactly what is left; a relative deadline is counted from receipt, so transit (under a millisecond a
    // hop at rest, a few with the rest of the suite running: once 4 ms) is not taken off, and C's may end that much later.
    expect(ctx.deadline).toBeLessThanOrEqual(outer! + 50)
    expect(ctx.deadline).toBeLessThanOrEqual(before + 800 + 50)
    expect(ctx.meta).toEqual({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', hop: 'b' })
    expect(Object.isFrozen(ctx.meta)).toBe(true)
    controller.abort()
    expect((await waiter.nextAbort()).code).toBe('CANCELLED')
    expect(await call).toMatchObject([{ from: 'b', ok: false, error: { code: 'CANCELLED' } }])
  })

  it('an inner timeout shorter than what is left wins; detach keeps the inner call alive after A gives up', async () => {
    const { a, waiter } = await chain()
    const before = Date.now()
    void a.call(['b'], 'B.Relay', { timeout: 200 }, { timeout: 5000 })
    const inner = await waiter.nextStart()
    expect(inner.deadline).toBeLessThanOrEqual(before + 250)
    expect((await waiter.nextAbort()).code).toBe('TIMEOUT')

    const controller = new AbortController()
    const start = Date.now()
    void a.call(['b'], 'B.Relay', { detach: true, timeout: 3000 }, { timeout: 200, signal: controller.signal })
    const detached = await waiter.nextStart()
    // Its own timeout, not what is left of A's 200 ms.
    expect(detached.deadline! - start).toBeGreaterThan(2000)
    controller.abort()
    // Not aborted by A's cancel: it runs on until its own deadline.
    expect((await waiter.nextAbort()).code).toBe('TIMEOUT')
    expect(Date.now() - start).toBeGreaterThan(2000)
  })

  it('an onward call made after the served call’s deadline has passed is not sent: TIMEOUT at once', async () => {
    const { a, b, waiter } = await chain()
    const inner = deferred<unknown>()
    b.register(
      {
        Late: (_: unknown, ctx: CallContext) =>
          new Promise((resolve) => {
            ctx.signal.addEventListener('abort', () => {
              // The deadline has passed: the onward call must not reach C.
              void ctx.call(['c'], 'W.Wait').then(inner.resolve, inner.reject)
              resolve(null)
            })
          }),
      },
      'Late',
    )
    await a.call(['b'], 'Late.Late', null, { timeout: 150 })
    expect(await within(inner.promise, 5000, 'the onward call')).toMatchObject([{ from: 'c', ok: false, error: { code: 'TIMEOUT' } }])
    // The b → c link is ordered: once a later call is answered, the late one would have arrived, had it been sent.
    expect(await b.call(['c'], 'W.Quick', 1)).toMatchObject([{ ok: true, reply: 1 }])
    expect(waiter.started).toHaveLength(0)
  })

  it('bad options of an onward call are TypeErrors there, as they are on a node', async () => {
    const { a, b } = await chain()
    b.register(
      {
        Bad: async (_: unknown, ctx: CallContext) => {
          const errors: string[] = []
          for (const options of [{ meta: 'ab' }, { meta: [1] }, { signal: 1 }, { until: 'all' }, { detach: 'yes' }]) {
            await ctx.call(['c'], 'W.Quick', 1, options as never).catch((error: Error) => errors.push(error.name))
          }
          return errors
        },
      },
      'Bad',
    )
    expect(await a.call(['b'], 'Bad.Bad')).toEqual([
      { from: 'b', ok: true, reply: ['TypeError', 'TypeError', 'TypeError', 'TypeError', 'TypeError'] },
    ])
  })

  it('a parent that is not a handler’s ctx is a TypeError', async () => {
    const { a } = await chain()
    const fake = { from: 'x', method: 'm', cast: false, deadline: undefined, meta: {} } as unknown as CallContext
    await expect(a.call(['b'], 'B.Relay', {}, { parent: fake })).rejects.toBeInstanceOf(TypeError)
  })
})

describe('until: stopping before every peer has answered', () => {
  async function three() {
    const caller = makeNode('caller')
    const fast1 = makeNode('fast1')
    const fast2 = makeNode('fast2')
    const slow = makeNode('slow')
    const waiter = new Waiter()
    for (const n of [fast1, fast2]) n.register({ Wait: () => 'fast', Fail: () => Promise.reject(new Error('no')) }, 'W')
    slow.register(waiter, 'W')
    await Promise.all([pair(caller, fast1), pair(caller, fast2), pair(caller, slow)])
    return { caller, slow, waiter }
  }

  it('{ ok: 2 } of 3 resolves at the second reply, and the slow handler is aborted', async () => {
    const { caller, slow, waiter } = await three()
    const start = performance.now()
    const results = await caller.call(['fast1', 'fast2', 'slow'], 'W.Wait', null, { until: { ok: 2 }, timeout: 30_000 })
    expect(performance.now() - start).toBeLessThan(10_000)
    expect(results.slice(0, 2).map((r) => r.ok && r.reply)).toEqual(['fast', 'fast'])
    expect(results[2]).toMatchObject({ from: 'slow', ok: false, error: { code: 'CANCELLED' } })
    expect((await waiter.nextAbort()).code).toBe('CANCELLED')
    await until(slow, (s) => s.running === 0 && s.cancelledAnswers === 1, 'the slow handler to leave')
    expect(caller.stats()).toMatchObject({ pending: 0, inflight: 0 })
  })

  it("'first-ok' resolves at the first reply", async () => {
    const { caller, waiter } = await three()
    const results = await caller.call([], 'W.Wait', null, { until: 'first-ok', timeout: 30_000 })
    expect(results).toHaveLength(3)
    expect(results.filter((r) => r.ok)).toHaveLength(1)
    expect(results.filter((r) => !r.ok && r.error.code === 'CANCELLED')).toHaveLength(2)
    expect(new Set(results.map((r) => r.from))).toEqual(new Set(['fast1', 'fast2', 'slow']))
    expect((await waiter.nextAbort()).code).toBe('CANCELLED')
  })

  it('an impossible quorum resolves at once, with nothing sent', async () => {
    const { caller, waiter } = await three()
    const results = await caller.call(['fast1', 'slow', 'nobody'], 'W.Wait', null, { until: { ok: 3 }, timeout: 30_000 })
    expect(results.map((r) => !r.ok && r.error.code)).toEqual(['NOT_CONNECTED', 'CANCELLED', 'CANCELLED'])
    expect(await caller.call(['slow'], 'W.Quick', 1)).toMatchObject([{ ok: true, reply: 1 }])
    expect(waiter.started).toHaveLength(0)
  })

  it('a quorum that errors make impossible resolves at once and aborts the stragglers', async () => {
    const { caller, waiter } = await three()
    const start = performance.now()
    const results = await caller.call(['fast1', 'fast2', 'slow'], 'W.Fail', null, { until: { ok: 2 }, timeout: 30_000 })
    expect(performance.now() - start).toBeLessThan(10_000)
    // fast1 and fast2 answer REMOTE; the first of them makes 2 unreachable only with slow still out, so slow is cancelled.
    expect(results.filter((r) => !r.ok && r.error.code === 'REMOTE').length).toBeGreaterThanOrEqual(1)
    expect(results).toHaveLength(3)
    void waiter
  })

  it('a predicate sees the results so far; one that throws rejects the call and cancels the rest', async () => {
    const { caller, waiter } = await three()
    const seen: number[] = []
    const results = await caller.call([], 'W.Wait', null, {
      until: (so) => (seen.push(so.length), so.filter((r) => r.ok).length === 2),
      timeout: 30_000,
    })
    expect(results.filter((r) => r.ok)).toHaveLength(2)
    expect(seen.slice(0, 2)).toEqual([1, 2])
    await waiter.nextAbort()
    const boom = new Error('predicate failed')
    await expect(
      caller.call([], 'W.Wait', null, {
        until: () => {
          throw boom
        },
        timeout: 30_000,
      }),
    ).rejects.toBe(boom)
    expect((await waiter.nextAbort()).code).toBe('CANCELLED')
  })

  it('a bad until is a TypeError', async () => {
    const { caller } = await three()
    for (const bad of [{ ok: 0 }, { ok: 1.5 }, 'all', 3, null]) {
      await expect(caller.call([], 'W.Wait', null, { until: bad as never })).rejects.toBeInstanceOf(TypeError)
    }
  })

  it('stream() yields each peer once in arrival order, NOT_CONNECTED first; break cancels the rest', async () => {
    const { caller, slow, waiter } = await three()
    const stream = caller.stream(['nobody', 'fast1', 'slow', 'fast2'], 'W.Wait', null, { timeout: 30_000 })
    expect([...stream.targets].sort()).toEqual(['fast1', 'fast2', 'nobody', 'slow'])
    const got: string[] = []
    for await (const result of stream) {
      got.push(result.from)
      if (got.length === 3) break
    }
    expect(got[0]).toBe('nobody')
    expect(new Set(got.slice(1))).toEqual(new Set(['fast1', 'fast2']))
    expect((await waiter.nextAbort()).code).toBe('CANCELLED')
    await until(slow, (s) => s.running === 0, 'the slow handler to leave')
    expect(caller.stats()).toMatchObject({ pending: 0, inflight: 0 })
  })

  it('stream() to the end yields every peer exactly once, then is done', async () => {
    const { caller } = await three()
    const results = []
    for await (const result of caller.stream(['fast1', 'fast2'], 'W.Wait', 3)) results.push(result)
    expect(results.map((r) => r.from).sort()).toEqual(['fast1', 'fast2'])
    expect(results.every((r) => r.ok && r.reply === 'fast')).toBe(true)
  })
})

describe('metadata', () => {
  it('reaches the handler read-only, strings and bytes; bad keys are TypeErrors, too much is TOO_LARGE', async () => {
    const { alpha, beta } = await callerAndServer()
    beta.register({ Meta: (_: unknown, ctx: CallContext) => ctx.meta }, 'M')
    const [r] = await alpha.call(['beta'], 'M.Meta', null, { meta: { 'x-request-id': 'r1', blob: new Uint8Array([1, 2]) } })
    expect(r).toEqual({ from: 'beta', ok: true, reply: { 'x-request-id': 'r1', blob: new Uint8Array([1, 2]) } })
    await expect(alpha.call(['beta'], 'M.Meta', null, { meta: { 'Bad Key': 'v' } })).rejects.toBeInstanceOf(TypeError)
    await expect(alpha.call(['beta'], 'M.Meta', null, { meta: { k: 5 as unknown as string } })).rejects.toBeInstanceOf(TypeError)
    await expect(alpha.call(['beta'], 'M.Meta', null, { meta: { big: 'x'.repeat(9000) } })).rejects.toMatchObject({ code: 'TOO_LARGE' })
    await expect(alpha.cast(['beta'], 'M.Meta', null, { meta: { big: 'x'.repeat(9000) } })).rejects.toMatchObject({ code: 'TOO_LARGE' })
    // ctx.from is what the link proved, whatever the metadata says.
    beta.register({ Who: (_: unknown, ctx: CallContext) => ctx.from }, 'Id')
    expect(await alpha.call(['beta'], 'Id.Who', null, { meta: { from: 'root' } })).toEqual([{ from: 'beta', ok: true, reply: 'alpha' }])
  })

  it('maxMetaBytes and forwardMeta are checked options', () => {
    expect(() => makeNode('m1', { maxMetaBytes: 70_000 })).toThrow(BilateralError)
    expect(() => makeNode('m2', { forwardMeta: ['Not A Key'] })).toThrow(BilateralError)
    expect(() => makeNode('m3', { maxMetaBytes: 0, forwardMeta: [] })).not.toThrow()
  })
})

describe('what a handler throws', () => {
  it('any value, even one with no string form, is answered REMOTE, and the calls batched with it are served', async () => {
    const { alpha, beta } = await callerAndServer()
    const odd: unknown[] = [Object.create(null), null, undefined, Object.assign(new Error('x'), { message: Object.create(null) })]
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('trap')
        },
        getPrototypeOf() {
          throw new Error('trap')
        },
      },
    )
    odd.push(hostile)
    beta.register(
      {
        Sync: (i: number) => {
          throw odd[i]
        },
        Async: async (i: number) => {
          throw odd[i]
        },
        Getter: async () => ({
          get boom(): never {
            throw null
          },
        }),
        Ok: (n: number) => n,
      },
      'Odd',
    )
    // One turn: the throwing calls and the good ones leave in one batch.
    const calls = odd.flatMap((_, i) => [
      alpha.call(['beta'], 'Odd.Sync', i),
      alpha.call(['beta'], 'Odd.Async', i),
      alpha.call(['beta'], 'Odd.Ok', i),
    ])
    calls.push(alpha.call(['beta'], 'Odd.Getter'))
    const results = (await Promise.all(calls)).map(([r]) => (r!.ok ? r!.reply : r!.error.code))
    expect(results).toEqual([...odd.flatMap((_, i) => ['REMOTE', 'REMOTE', i]), 'BAD_REPLY'])
    expect(beta.stats().running).toBe(0)
  })
})
