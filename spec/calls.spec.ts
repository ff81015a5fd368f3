import { EventEmitter } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { Bilateral, BilateralError, RemoteError, generateKeypair, type CallContext } from '../lib/index.js'
import { Arith, FAST, closeAll, deferred, makeNode, nextEvent, pair } from './helpers.js'

afterEach(closeAll)

/** alpha dials beta; both register Arith. */
async function connectedPair() {
  const alpha = makeNode('alpha', { callerStacks: true })
  const beta = makeNode('beta', { callerStacks: true })
  alpha.register(new Arith())
  beta.register(new Arith())
  await pair(alpha, beta)
  return { alpha, beta }
}

describe('calls over one connection', () => {
  it('a call and its reverse travel over the single connection alpha dialled', async () => {
    const { alpha, beta } = await connectedPair()
    expect(await alpha.call([], 'Arith.SumDiff', { A: 100, B: 250 })).toEqual([{ from: 'beta', ok: true, reply: { S: 350, D: -150 } }])
    expect(await beta.call([], 'Arith.SumDiff', { A: 7, B: 2 })).toEqual([{ from: 'alpha', ok: true, reply: { S: 9, D: 5 } }])
    expect(alpha.links()).toEqual([{ peer: 'beta', direction: 'outbound' }])
    expect(beta.links()).toEqual([{ peer: 'alpha', direction: 'inbound' }])
  })

  it('a receiver registered under another name answers under that name', async () => {
    const { alpha, beta } = await connectedPair()
    expect(beta.register(new Arith(), 'Calc')).toEqual(['Calc.SumDiff'])
    const [r] = await alpha.call(['beta'], 'Calc.SumDiff', { A: 1, B: 1 })
    expect(r).toEqual({ from: 'beta', ok: true, reply: { S: 2, D: 0 } })
  })

  it('ctx.from names the caller in both directions', async () => {
    const { alpha, beta } = await connectedPair()
    const who = { Who: (_: unknown, ctx: CallContext) => `${ctx.from} via ${ctx.method}` }
    alpha.register(who, 'Id')
    beta.register(who, 'Id')
    expect((await alpha.call([], 'Id.Who'))[0]).toMatchObject({ ok: true, reply: 'alpha via Id.Who' })
    expect((await beta.call([], 'Id.Who'))[0]).toMatchObject({ ok: true, reply: 'beta via Id.Who' })
  })

  it('an async handler is awaited', async () => {
    const { alpha, beta } = await connectedPair()
    beta.register({ Later: async (n: number) => (await Promise.resolve(n)) * 2 }, 'Async')
    expect((await alpha.call(['beta'], 'Async.Later', 21))[0]).toEqual({ from: 'beta', ok: true, reply: 42 })
  })

  it('msgpack types survive the round trip: binary, Date, BigInt, null, nesting', async () => {
    const { alpha, beta } = await connectedPair()
    beta.register({ Echo: (x: unknown) => x }, 'Echo')
    const value = {
      bin: new Uint8Array([0, 1, 254, 255]),
      when: new Date(1_700_000_000_123),
      big: 2n ** 63n - 1n,
      neg: -(2n ** 63n),
      large: 2 ** 40,
      nothing: null,
      list: [1, 'two', [3, { four: true }]],
      float: 1.5,
      text: 'héllo ✓',
    }
    const [r] = await alpha.call(['beta'], 'Echo.Echo', value)
    expect(r).toEqual({ from: 'beta', ok: true, reply: value })
  })

  it('call resolves as soon as every peer answered, without waiting out the timeout', async () => {
    const { alpha } = await connectedPair()
    const t0 = performance.now()
    await alpha.call([], 'Arith.SumDiff', { A: 1, B: 2 }, { timeout: 60_000 })
    expect(performance.now() - t0).toBeLessThan(5_000)
  })
})

describe('cast', () => {
  it('delivers the arguments and the sender name in both directions, and resolves to whom it was sent', async () => {
    const { alpha, beta } = await connectedPair()
    const seen = { alpha: deferred<[unknown, string]>(), beta: deferred<[unknown, string]>() }
    alpha.register({ Set: (v: unknown, ctx: CallContext) => seen.alpha.resolve([v, ctx.from]) }, 'LastItem')
    beta.register({ Set: (v: unknown, ctx: CallContext) => seen.beta.resolve([v, ctx.from]) }, 'LastItem')
    expect(await alpha.cast(['beta'], 'LastItem.Set', { Value: 765 })).toEqual(['beta'])
    expect(await beta.cast([], 'LastItem.Set', { Value: 567 })).toEqual(['alpha'])
    expect(await seen.beta.promise).toEqual([{ Value: 765 }, 'alpha'])
    expect(await seen.alpha.promise).toEqual([{ Value: 567 }, 'beta'])
  })

  it('a failing cast handler is reported on the serving node as cast:error', async () => {
    const { alpha, beta } = await connectedPair()
    beta.register({ Boom: () => Promise.reject(new RangeError('nope')) }, 'Bad')
    const reported = new Promise<[unknown, CallContext]>((resolve) => beta.once('cast:error', (e, ctx) => resolve([e, ctx])))
    await alpha.cast(['beta'], 'Bad.Boom')
    const [error, ctx] = await reported
    expect(error).toBeInstanceOf(RangeError)
    expect(ctx).toMatchObject({ from: 'alpha', method: 'Bad.Boom', cast: true })
  })

  it('leaves out named peers that are not active', async () => {
    const { alpha } = await connectedPair()
    expect(await alpha.cast(['beta', 'nobody'], 'Arith.SumDiff', { A: 1, B: 1 })).toEqual(['beta'])
  })
})

describe('multicast', () => {
  it('one node calls two and gets one answer from each', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    const gamma = makeNode('gamma')
    for (const n of [alpha, beta, gamma]) n.register(new Arith())
    await pair(alpha, beta)
    await pair(alpha, gamma)
    const results = await alpha.call([], 'Arith.SumDiff', { A: 5, B: 3 })
    expect(results.map((r) => r.from).sort()).toEqual(['beta', 'gamma'])
    expect(results.every((r) => r.ok && (r.reply as { S: number }).S === 8)).toBe(true)
  })

  it('two nodes call one, each over its own connection', async () => {
    const hub = makeNode('hub')
    const left = makeNode('left')
    const right = makeNode('right')
    hub.register({ Whoami: (_: unknown, ctx: CallContext) => ctx.from }, 'Id')
    await pair(left, hub)
    await pair(right, hub)
    const [l, r] = await Promise.all([left.call(['hub'], 'Id.Whoami'), right.call(['hub'], 'Id.Whoami')])
    expect(l).toEqual([{ from: 'hub', ok: true, reply: 'left' }])
    expect(r).toEqual([{ from: 'hub', ok: true, reply: 'right' }])
    expect(hub.activeConnections().sort()).toEqual(['left', 'right'])
    expect(hub.connectionCount()).toBe(2)
  })

  it('an explicit to list reports a missing peer as NOT_CONNECTED after the replies', async () => {
    const { alpha, beta } = await connectedPair()
    for (const [node, other] of [
      [alpha, 'beta'],
      [beta, 'alpha'],
    ] as const) {
      const results = await node.call(['ghost', other], 'Arith.SumDiff', { A: 1, B: 2 })
      expect(results).toHaveLength(2)
      expect(results[0]).toEqual({ from: other, ok: true, reply: { S: 3, D: -1 } })
      expect(results[1]).toMatchObject({ from: 'ghost', ok: false })
      const error = (results[1] as { error: BilateralError }).error
      expect(error).toBeInstanceOf(BilateralError)
      expect(error.code).toBe('NOT_CONNECTED')
      expect(error.peer).toBe('ghost')
    }
  })

  it('an empty to list with no active peers resolves to no results', async () => {
    const lonely = makeNode('lonely')
    expect(await lonely.call([], 'Arith.SumDiff', { A: 1, B: 2 })).toEqual([])
  })

  it('a peer that does not answer in time gets a TIMEOUT entry while the others reply', async () => {
    const alpha = makeNode('alpha')
    const fast = makeNode('fast')
    const slow = makeNode('slow')
    fast.register({ Go: () => 'done' }, 'Job')
    slow.register({ Go: () => new Promise(() => {}) }, 'Job')
    await pair(alpha, fast)
    await pair(alpha, slow)
    const results = await alpha.call([], 'Job.Go', null, { timeout: 300 })
    expect(results[0]).toEqual({ from: 'fast', ok: true, reply: 'done' })
    expect(results[1]).toMatchObject({ from: 'slow', ok: false, error: { code: 'TIMEOUT', peer: 'slow' } })
    expect(alpha.stats().pending).toBe(0)
  })
})

describe('errors from handlers', () => {
  for (const direction of ['forward', 'reverse'] as const) {
    it(`a thrown error and a rejected promise become REMOTE entries (${direction})`, async () => {
      const { alpha, beta } = await connectedPair()
      const [caller, server, serverName] = direction === 'forward' ? [alpha, beta, 'beta'] : [beta, alpha, 'alpha']
      server.register(
        {
          Throws: () => {
            throw new RangeError('too big')
          },
          Rejects: async () => {
            throw new TypeError('bad type')
          },
        },
        'Fail',
      )
      const [thrown] = await caller.call([], 'Fail.Throws')
      const [rejected] = await caller.call([], 'Fail.Rejects')
      for (const [entry, name, message] of [
        [thrown, 'RangeError', 'too big'],
        [rejected, 'TypeError', 'bad type'],
      ] as const) {
        expect(entry?.ok).toBe(false)
        const error = (entry as unknown as { error: RemoteError }).error
        expect(error).toBeInstanceOf(RemoteError)
        expect(error).toBeInstanceOf(BilateralError)
        expect(error.code).toBe('REMOTE')
        // Recognisably remote in a log line, with the thrown error's own name and message kept apart.
        expect(error.name).toBe('RemoteError')
        expect(String(error)).toBe(`RemoteError: ${name}: ${message}`)
        expect(error.remoteName).toBe(name)
        expect(error.remoteMessage).toBe(message)
        expect(error.stack!.split('\n', 1)[0]).toBe(`RemoteError: ${name}: ${message} (from ${serverName})`)
        expect(error.peer).toBe(serverName)
        expect(error.stack).toContain('calls.spec.ts')
      }
      // The serving node keeps serving.
      expect((await caller.call([], 'Arith.SumDiff', { A: 1, B: 1 }))[0]?.ok).toBe(true)
    })
  }

  it('constructor, __proto__, toString, hasOwnProperty, a data property and an unknown name are all NO_SUCH_METHOD', async () => {
    const { alpha, beta } = await connectedPair()
    const receiver = Object.assign(new Arith(), { notAFunction: 42 })
    beta.register(receiver, 'Guarded')
    alpha.register(receiver, 'Guarded')
    const probes = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'notAFunction', 'Missing', '_private']
    for (const [caller, peer] of [
      [alpha, 'beta'],
      [beta, 'alpha'],
    ] as const) {
      for (const method of probes) {
        const [entry] = await caller.call([peer], `Guarded.${method}`)
        expect(entry, method).toMatchObject({ from: peer, ok: false, error: { code: 'NO_SUCH_METHOD', peer } })
      }
      const [unknownReceiver] = await caller.call([peer], 'Nope.SumDiff')
      expect(unknownReceiver).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
    }
    expect(Object.prototype.toString.call({})).toBe('[object Object]')
  })

  it('by default (callerStacks off), errors carry no caller stack but everything else', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    beta.register({ Boom: () => Promise.reject(new RangeError('no')) }, 'Bad')
    await pair(alpha, beta)
    const [entry] = await alpha.call(['beta'], 'Bad.Boom')
    const error = (entry as unknown as { error: RemoteError }).error
    expect([error.code, error.remoteName, error.remoteMessage]).toEqual(['REMOTE', 'RangeError', 'no'])
    expect(error.stack).not.toContain('calls.spec.ts')
    // No frames of this library either: the stack is where the error came from.
    expect(error.stack).toBe('RemoteError: RangeError: no (from beta)\n    at remote peer beta')
  })

  it("a handler error's own string code travels as remoteCode", async () => {
    const { alpha, beta } = await connectedPair()
    beta.register({ Find: () => Promise.reject(Object.assign(new Error('no such user'), { code: 'E_NOT_FOUND' })) }, 'Users')
    const [entry] = await alpha.call(['beta'], 'Users.Find')
    const error = (entry as unknown as { error: RemoteError }).error
    expect(error).toBeInstanceOf(RemoteError)
    expect([error.code, error.remoteCode, error.remoteMessage]).toEqual(['REMOTE', 'E_NOT_FOUND', 'no such user'])
  })

  it('a result msgpack cannot encode becomes a BAD_REPLY entry', async () => {
    const { alpha, beta } = await connectedPair()
    beta.register({ Fn: () => () => 1 }, 'Odd')
    const [entry] = await alpha.call(['beta'], 'Odd.Fn')
    expect(entry).toMatchObject({ ok: false, error: { code: 'BAD_REPLY', peer: 'beta' } })
  })
})

describe('robustness of the node itself', () => {
  it('a throwing event listener is reported as INTERNAL and the node keeps serving', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    const gamma = makeNode('gamma')
    beta.register(new Arith())
    const internal = new Promise<BilateralError>((resolve) => beta.on('frame:dropped', (e) => e.code === 'INTERNAL' && resolve(e)))
    beta.on('peer:up', (name) => {
      if (name === 'alpha') throw new Error('listener bug')
    })
    await pair(alpha, beta)
    expect((await internal).message).toContain('listener bug')
    await pair(gamma, beta)
    expect((await gamma.call(['beta'], 'Arith.SumDiff', { A: 1, B: 1 }))[0]).toMatchObject({ ok: true })
  })

  it('methods of library base classes (EventEmitter, Map) are never exposed', async () => {
    const { alpha, beta } = await connectedPair()
    class Service extends EventEmitter {
      Ping() {
        return 'pong'
      }
    }
    expect(beta.register(new Service(), 'Svc')).toEqual(['Svc.Ping'])
    expect(beta.register(new Map(), 'Store')).toEqual([])
    expect((await alpha.call(['beta'], 'Svc.Ping'))[0]).toMatchObject({ ok: true, reply: 'pong' })
    for (const method of ['Svc.emit', 'Svc.removeAllListeners', 'Svc.setMaxListeners', 'Store.clear', 'Store.set']) {
      expect((await alpha.call(['beta'], method))[0], method).toMatchObject({ ok: false, error: { code: 'NO_SUCH_METHOD' } })
    }
  })

  it('waitForPeers rejects with CLOSED as soon as the node closes, and holds no timer', async () => {
    const node = makeNode('lonely')
    const waiting = node.waitForPeers(['nobody'], { timeout: 60_000 })
    const t0 = performance.now()
    await node.close()
    await expect(waiting).rejects.toMatchObject({ code: 'CLOSED' })
    expect(performance.now() - t0).toBeLessThan(5_000)
  })

  it('many concurrent waitForPeers do not pile listeners on the node', async () => {
    const { alpha } = await connectedPair()
    const before = alpha.listenerCount('peer:up')
    const waits = Array.from({ length: 50 }, () => alpha.waitForPeers(['later'], { timeout: 60_000 }).catch((e: BilateralError) => e.code))
    expect(alpha.listenerCount('peer:up')).toBe(before)
    await alpha.close()
    expect(new Set(await Promise.all(waits))).toEqual(new Set(['CLOSED']))
  })

  it('listen() racing close() binds nothing and rejects with CLOSED, plaintext or encrypted', async () => {
    const keypair = await generateKeypair()
    for (const options of [{ name: 'racer' }, { name: keypair.publicKey, keypair }]) {
      const node = new Bilateral({ network: 'test net', ...FAST, ...options })
      const listening = node.listen('tcp://127.0.0.1:*')
      await node.close()
      await expect(listening).rejects.toMatchObject({ code: 'CLOSED' })
    }
  })

  it('close() still parts from every peer and frees everything when a peer:down listener throws, then rejects with its error', async () => {
    // Not makeNode: its close() is meant to reject, and closeAll would take that for a failure.
    const alpha = new Bilateral({ network: 'test net', name: 'alpha', ...FAST })
    const beta = makeNode('beta')
    const gamma = makeNode('gamma')
    await pair(alpha, beta)
    await pair(gamma, alpha)
    const boom = new Error('a listener failed')
    alpha.on('peer:down', () => {
      throw boom
    })
    const parted = (node: typeof beta) => nextEvent<[string, string]>(node, 'peer:down').then(([, reason]) => reason)
    const seen = [parted(beta), parted(gamma)]
    const [first, second] = [alpha.close(), alpha.close()]
    await expect(first).rejects.toBe(boom)
    await expect(second).rejects.toBe(boom)
    // Both were parted (dialled and accepted): neither waits for a heartbeat.
    expect(await Promise.all(seen)).toEqual(['PART', 'PART'])
    expect(alpha.stats()).toMatchObject({ pending: 0, peers: 0, connections: 0 })
  })
})

describe('local misuse', () => {
  it('rejects a non-positive or non-finite timeout with a TypeError', async () => {
    const { alpha } = await connectedPair()
    for (const timeout of [0, -1, Infinity, NaN]) {
      await expect(alpha.call([], 'Arith.SumDiff', {}, { timeout })).rejects.toThrow(TypeError)
    }
  })

  it('rejects arguments msgpack cannot carry with a TypeError', async () => {
    const { alpha } = await connectedPair()
    const circular: Record<string, unknown> = {}
    circular.self = circular
    await expect(alpha.call([], 'Arith.SumDiff', circular)).rejects.toThrow(TypeError)
    await expect(alpha.call([], 'Arith.SumDiff', { f: () => 1 })).rejects.toThrow(TypeError)
  })

  it('registering two receivers under one name is an error', () => {
    const node = makeNode('solo')
    node.register(new Arith())
    expect(() => node.register(new Arith())).toThrow(expect.objectContaining({ code: 'ALREADY_REGISTERED' }))
    expect(() => node.register({ x: () => 1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('connecting to our own name is refused as loopback, and a second connect to one name is an error', () => {
    const node = makeNode('self')
    expect(() => node.connect('self', 'tcp://127.0.0.1:1')).toThrow(expect.objectContaining({ code: 'LOOPBACK' }))
    node.connect('other', 'tcp://127.0.0.1:1')
    expect(() => node.connect('other', 'tcp://127.0.0.1:2')).toThrow(expect.objectContaining({ code: 'ALREADY_CONNECTED' }))
    expect(() => node.connect('x', 'not an address')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('listening on a taken address rejects with BIND_FAILED', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const endpoint = await a.listen('tcp://127.0.0.1:*')
    await expect(b.listen(endpoint)).rejects.toMatchObject({ code: 'BIND_FAILED' })
  })

  it('waitForPeers rejects with TIMEOUT naming the peers still missing', async () => {
    const node = makeNode('waiter')
    await expect(node.waitForPeers(['x', 'y'], { timeout: 50 })).rejects.toMatchObject({
      code: 'TIMEOUT',
      message: expect.stringContaining('x (not dialled by this node, and it has not dialled us), y ('),
    })
  })
})

describe('listening again while serving', () => {
  it('a listen() while calls stream in blocks nothing: every call is answered, no receive loop dies', async () => {
    const server = makeNode('server')
    const client = makeNode('client')
    server.register(new Arith())
    const failures: string[] = []
    server.on('frame:dropped', (error) => failures.push(error.message))
    await pair(client, server)
    // zeromq.js blocks a socket (EBUSY) while it binds: calls arriving meanwhile must wait, not kill the ROUTER's loop.
    let stop = false
    const stream = (async () => {
      let answered = 0
      while (!stop && answered < 1_000_000) {
        const [r] = await client.call(['server'], 'Arith.SumDiff', { A: answered, B: 1 })
        if (!r?.ok) throw new Error(`call failed: ${JSON.stringify(r)}`)
        answered++
      }
      return answered
    })()
    for (let i = 0; i < 20; i++) await server.listen('tcp://127.0.0.1:*')
    stop = true
    expect(await stream).toBeGreaterThan(0)
    expect(failures).toEqual([])
    expect(await client.call(['server'], 'Arith.SumDiff', { A: 1, B: 1 })).toEqual([{ from: 'server', ok: true, reply: { S: 2, D: 0 } }])
  })
})
