import { afterEach, expect, it } from 'vitest'
import { closeAll, deferred, makeNode, pair } from './helpers.js'

afterEach(closeAll)

it('beyond maxInflight a call gets OVERLOADED at once for that peer, and other peers are unaffected', async () => {
  const alpha = makeNode('alpha', { maxInflight: 2 })
  const slow = makeNode('slow')
  const fast = makeNode('fast')
  slow.register({ Hang: () => new Promise(() => {}) }, 'Svc')
  fast.register({ Hang: () => 'not hanging' }, 'Svc')
  await pair(alpha, slow)
  await pair(alpha, fast)
  const hung = [alpha.call(['slow'], 'Svc.Hang', null, { timeout: 30_000 }), alpha.call(['slow'], 'Svc.Hang', null, { timeout: 30_000 })]
  const t0 = performance.now()
  const results = await alpha.call(['slow', 'fast'], 'Svc.Hang', null, { timeout: 30_000 })
  expect(performance.now() - t0).toBeLessThan(5_000)
  expect(results).toEqual([
    { from: 'fast', ok: true, reply: 'not hanging' },
    expect.objectContaining({ from: 'slow', ok: false, error: expect.objectContaining({ code: 'OVERLOADED', peer: 'slow' }) }),
  ])
  expect(alpha.stats().inflight).toBe(1)
  await alpha.close()
  expect((await Promise.all(hung)).flat().map((r) => (r.ok ? 'ok' : r.error.code))).toEqual(['CLOSED', 'CLOSED'])
  expect(alpha.stats()).toMatchObject({ pending: 0, inflight: 0 })
})

it('beyond maxConcurrent the serving node answers OVERLOADED, and serves again once a handler finishes', async () => {
  const caller = makeNode('caller')
  const server = makeNode('server', { maxConcurrent: 1 })
  const entered = deferred()
  const release = deferred<string>()
  server.register({ Work: () => (entered.resolve(), release.promise), Quick: () => 'quick' }, 'Svc')
  await pair(caller, server)
  const first = caller.call(['server'], 'Svc.Work', null, { timeout: 30_000 })
  await entered.promise
  expect((await caller.call(['server'], 'Svc.Quick'))[0]).toMatchObject({ ok: false, error: { code: 'OVERLOADED', peer: 'server' } })
  release.resolve('done')
  expect(await first).toEqual([{ from: 'server', ok: true, reply: 'done' }])
  expect((await caller.call(['server'], 'Svc.Quick'))[0]).toEqual({ from: 'server', ok: true, reply: 'quick' })
  expect(server.stats().running).toBe(0)
})

it('limits are validated', () => {
  for (const bad of [0, -1, 1.5, Infinity]) {
    expect(() => makeNode('x', { maxInflight: bad })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => makeNode('x', { maxConcurrent: bad })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  }
})
