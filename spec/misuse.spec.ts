import { encode } from '@msgpack/msgpack'
import { afterEach, describe, expect, it } from 'vitest'
import { Arith, closeAll, makeNode, pair } from './helpers.js'
import { RawPeer, T } from './rawpeer.js'

const raws: RawPeer[] = []
afterEach(async () => {
  for (const raw of raws.splice(0)) raw.close()
  await closeAll()
})

describe('timers beyond what setTimeout can wait', () => {
  it('a call or waitForPeers timeout of 2^31 ms or more is refused at once with a TypeError', async () => {
    const node = makeNode('alone')
    for (const timeout of [2 ** 31, 1e12]) {
      await expect(node.call([], 'A.B', null, { timeout })).rejects.toThrow(TypeError)
      await expect(node.waitForPeers(['x'], { timeout })).rejects.toThrow(TypeError)
    }
    // The largest one is accepted (and does not fire early).
    const waiting = node.waitForPeers(['x'], { timeout: 2 ** 31 - 1 })
    await node.close()
    await expect(waiting).rejects.toMatchObject({ code: 'CLOSED' })
  })

  it('every option that becomes a timer is refused at 2^31 ms or more, naming the option', () => {
    for (const key of [
      'callTimeout',
      'pingInterval',
      'peerTimeout',
      'stallTimeout',
      'joinInterval',
      'reconnectMin',
      'reconnectMax',
      'joinTimeout',
      'linger',
      'gossipInterval',
    ]) {
      expect(() => makeNode('x', { [key]: 2 ** 31 })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(`option ${key}`) }),
      )
    }
  })
})

describe('error codes a peer may send', () => {
  /** A listener, and a raw peer joined to it that answers every CALL with the ERROR `answer` builds. */
  async function errorPeer(answer: (id: number) => unknown[]) {
    const node = makeNode('caller')
    const endpoint = await node.listen('tcp://127.0.0.1:*')
    const peer = new RawPeer(endpoint)
    raws.push(peer)
    await peer.join('test net', 'liar')
    void (async () => {
      for (;;) {
        const values = await peer.next(60_000).catch(() => undefined)
        if (values === undefined) return
        for (const v of values) if (Array.isArray(v) && v[1] === T.CALL) await peer.send(encode(answer(v[2] as number)))
      }
    })()
    return node
  }

  it('an ERROR whose code only this node may raise (NOT_CONNECTED, CLOSED, TIMEOUT, or any unknown one) is taken as a protocol error of that peer, clipped', async () => {
    for (const code of ['NOT_CONNECTED', 'CLOSED', 'TIMEOUT', 'x'.repeat(60_000)]) {
      const node = await errorPeer((id) => [1, T.ERROR, id, code, 'BilateralError', 'm'.repeat(60_000)])
      const [r] = await node.call(['liar'], 'Any.Thing')
      expect(r).toMatchObject({ from: 'liar', ok: false, error: { code: 'PROTOCOL' } })
      if (!r!.ok) expect(r!.error.message.length).toBeLessThan(20_000)
      await closeAll()
    }
  })

  it("a peer's ERROR path (via) is taken only as names of at most 255 bytes; a name that would forge a stack frame is shown quoted", async () => {
    const long = '€'.repeat(255) // 765 bytes: longer than any name
    const forged = 'x\n    at forged (evil.js:1:1)'
    const node = await errorPeer((id) =>
      id === 1
        ? [1, T.ERROR, id, 'REMOTE', 'Error', 'a', null, null, encode([long, 'c'])]
        : [1, T.ERROR, id, 'REMOTE', 'Error', 'b', null, encode({ k: 1 }), encode([forged])],
    )
    const [first] = await node.call(['liar'], 'Any.Thing')
    expect(first).toMatchObject({ ok: false, error: { code: 'REMOTE', remoteMessage: 'a', path: ['liar'] } })
    const [second] = await node.call(['liar'], 'Any.Thing')
    expect(second).toMatchObject({ ok: false, error: { remoteMessage: 'b', details: { k: 1 }, path: [forged, 'liar'] } })
    const stack = (second as { error: Error }).error.stack!
    expect(stack.split('\n').some((line) => line.startsWith('    at forged'))).toBe(false)
    expect(stack).toContain(`at remote peer ${JSON.stringify(forged)}`)
    expect(node.stats()).toMatchObject({ pending: 0, dropped: 0 })
  })

  it('the codes a peer may send pass through, and a REMOTE error keeps its own code, clipped', async () => {
    const node = await errorPeer((id) =>
      id === 1
        ? [1, T.ERROR, id, 'NO_SUCH_METHOD', 'BilateralError', 'nope']
        : [1, T.ERROR, id, 'REMOTE', 'TypeError', 'bad', 'E'.repeat(10_000)],
    )
    expect((await node.call(['liar'], 'Any.Thing'))[0]).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
    const [r] = await node.call(['liar'], 'Any.Thing')
    expect(r).toMatchObject({ ok: false, error: { code: 'REMOTE', remoteName: 'TypeError', remoteMessage: 'bad' } })
    if (!r!.ok) expect((r!.error as { remoteCode?: string }).remoteCode!.length).toBeLessThanOrEqual(65)
  })
})

describe('values msgpack would change', () => {
  it('arguments holding a Map, Set, RegExp, Error, invalid Date, non-Uint8Array typed array or ArrayBuffer are refused with a TypeError that says what and where; nothing is sent', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    let served = 0
    beta.register({ Echo: (x: unknown) => (served++, x) }, 'Svc')
    await pair(alpha, beta)
    for (const [value, what] of [
      [new Map([[1, 2]]), 'a Map'],
      [new Set([1]), 'a Set'],
      [/x/, 'a RegExp'],
      [new Error('e'), 'an Error'],
      [new Date(NaN), 'an invalid Date'],
      [new Float32Array([1.5]), 'a Float32Array'],
      [new ArrayBuffer(4), 'an ArrayBuffer'],
    ] as const) {
      const args = { list: [1, { deep: value }] }
      await expect(alpha.call(['beta'], 'Svc.Echo', args)).rejects.toThrow(new RegExp(`${what}.* at the value\\.list\\[1\\]\\.deep`))
      await expect(alpha.cast(['beta'], 'Svc.Echo', args)).rejects.toThrow(TypeError)
    }
    expect(served).toBe(0)
    // What msgpack carries faithfully still goes.
    const fine = { when: new Date(1_700_000_000_000), bin: new Uint8Array([1, 2]), big: 2n ** 60n, nested: [null, true, 'x'] }
    expect(await alpha.call(['beta'], 'Svc.Echo', fine)).toEqual([{ from: 'beta', ok: true, reply: fine }])
  })

  it('a result msgpack would change is answered BAD_REPLY, saying what and where', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    beta.register({ Lossy: () => ({ index: new Map([['k', 1]]) }) }, 'Svc')
    beta.register(new Arith())
    await pair(alpha, beta)
    expect(await alpha.call(['beta'], 'Svc.Lossy')).toMatchObject([
      { ok: false, error: { code: 'BAD_REPLY', message: expect.stringMatching(/a Map .* at the value\.index/) } },
    ])
  })
})
