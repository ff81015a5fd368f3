// Typed contracts at run time, errors across hops, and the mistakes a caller
// makes answered where they are made. Real nodes on loopback.
import { spawn } from 'node:child_process'
import { inspect } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { Bilateral, BilateralError, RemoteError, type CallContext } from '../lib/index.js'
import { generateKeypair } from '../lib/crypto.js'
import { FAST, closeAll, ensureBuilt, makeNode, pair, within } from './helpers.js'

afterEach(closeAll)

class Arith {
  SumDiff(args: { A: number; B: number }): { Sum: number; Diff: number } {
    return { Sum: args.A + args.B, Diff: args.A - args.B }
  }
  Fail(): never {
    throw Object.assign(new Error('no such user'), { code: 'E_NOUSER', details: { user: 'ada', tried: 2 } })
  }
}

interface Users {
  Find(args: { id: string }): { id: string; by: string }
}

describe('typed service contracts', () => {
  it('service<T>() with one peer resolves to the reply and rejects with the peer error; with peers, a result per peer', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    const c = makeNode('c')
    b.register(new Arith())
    c.register(new Arith())
    await pair(a, b)
    await pair(a, c)
    const arith = a.service<Arith>('Arith', { peer: 'b' })
    expect(await arith.SumDiff({ A: 5, B: 3 })).toEqual({ Sum: 8, Diff: 2 })
    const failure = await arith.Fail().catch((e: unknown) => e)
    expect(failure).toBeInstanceOf(RemoteError)
    expect(failure).toMatchObject({ code: 'REMOTE', remoteCode: 'E_NOUSER', details: { user: 'ada', tried: 2 }, path: ['b'], peer: 'b' })
    const all = await a.service<Arith>('Arith', { peers: ['b', 'c'] }).SumDiff({ A: 1, B: 1 })
    expect(all.map((r) => r.from).sort()).toEqual(['b', 'c'])
    expect(all.every((r) => r.ok && r.reply.Sum === 2)).toBe(true)
    // Every active peer, and the service's options as defaults of each call.
    const every = a.service<Arith>('Arith', { timeout: 1500 })
    expect((await every.SumDiff({ A: 2, B: 2 })).length).toBe(2)
    // A method the peer lacks is its answer, not a local guess.
    const missing = await (a.service<Record<string, () => unknown>>('Arith', { peer: 'b' }).Nope!() as Promise<unknown>).catch((e) => e)
    expect(missing).toMatchObject({ code: 'NO_SUCH_METHOD' })
    // Not mistaken for a promise; printed and converted without calling anything.
    expect(await Promise.resolve(arith).then((s) => typeof s)).toBe('object')
    expect(Object.prototype.toString.call(arith)).toBe('[object [service Arith on b]]')
    expect(`${arith}`).toBe('[service Arith on b]')
    expect(inspect(arith)).toBe('[service Arith on b]')
    const shown = arith as unknown as Record<string, unknown>
    expect([shown['valueOf'], shown['constructor'], shown['hasOwnProperty'], shown['_private']]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ])
    expect(b.stats()).toMatchObject({ running: 0 })
  })

  it('register<T>() serves an object literal typed by its contract; request() reaches one peer', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register<Users>({ Find: (args, ctx) => ({ id: args.id, by: ctx.from }) }, 'Users')
    await pair(a, b)
    expect(await a.request('b', 'Users.Find', { id: 'x' })).toEqual({ id: 'x', by: 'a' })
    expect(await a.service<Users>('Users', { peer: 'b' }).Find({ id: 'y' })).toEqual({ id: 'y', by: 'a' })
    await expect(a.request('nobody', 'Users.Find', {})).rejects.toMatchObject({ code: 'NOT_CONNECTED', peer: 'nobody' })
    await expect(a.request(['b'] as unknown as string, 'Users.Find', {})).rejects.toThrow(/request\(\) takes one peer name/)
  })
})

describe('errors that survive hops', () => {
  it("a chain a → b → c: a sees c's own code and details, the path it came by, and a log line that says remote", async () => {
    const a = makeNode('a', { callerStacks: true })
    const b = makeNode('b')
    const c = makeNode('c')
    c.register(new Arith())
    // b serves by calling c, and re-throws what c threw.
    b.register(
      {
        Relay: async (_args: unknown, ctx: CallContext) => {
          const [result] = await ctx.call(['c'], 'Arith.Fail')
          if (!result!.ok) throw result!.error
          return result!.reply
        },
      },
      'Front',
    )
    await pair(b, c)
    await pair(a, b)
    const error: RemoteError = await a.request('b', 'Front.Relay').then(
      () => expect.fail('Front.Relay should fail'),
      (e: unknown) => e as RemoteError,
    )
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({
      code: 'REMOTE',
      remoteCode: 'E_NOUSER',
      remoteName: 'Error',
      remoteMessage: 'no such user',
      details: { user: 'ada', tried: 2 },
      path: ['c', 'b'],
      peer: 'b',
    })
    expect(String(error)).toBe('RemoteError: Error: no such user')
    const lines = error.stack!.split('\n')
    expect(lines[0]).toBe('RemoteError: Error [E_NOUSER]: no such user (from c → b)')
    expect(lines.slice(1, 3)).toEqual(['    at remote peer c', '    at remote peer b'])
    // With callerStacks, the caller's own frames follow, and none of the library's.
    expect(error.stack).toContain('contracts.spec.ts')
    expect(lines.some((line) => /[/\\]lib[/\\](node|calls|mesh|wire)/.test(line))).toBe(false)
  })

  it('details that do not encode, or encode beyond 4 KiB, are left out; the error still arrives whole otherwise', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register(
      {
        Big: () => Promise.reject(Object.assign(new Error('big'), { code: 'E_BIG', details: 'x'.repeat(5000) })),
        Odd: () => Promise.reject(Object.assign(new Error('odd'), { details: new Map([[1, 2]]) })),
        Fits: () => Promise.reject(Object.assign(new Error('fits'), { details: 'x'.repeat(4000) })),
      },
      'E',
    )
    await pair(a, b)
    await expect(a.request('b', 'E.Big')).rejects.toMatchObject({ remoteCode: 'E_BIG', remoteMessage: 'big', details: undefined })
    await expect(a.request('b', 'E.Odd')).rejects.toMatchObject({ remoteMessage: 'odd', details: undefined })
    await expect(a.request('b', 'E.Fits')).rejects.toMatchObject({ details: 'x'.repeat(4000) })
  })

  it('at a small maxMessageSize, details that do not fit beside the rest are left out, and the link stays up', async () => {
    const a = makeNode('a', { maxMessageSize: 4096 })
    const b = makeNode('b', { maxMessageSize: 4096 })
    b.register(
      {
        Fail: () => Promise.reject(Object.assign(new Error('m'.repeat(800)), { code: 'E_BIG', details: 'x'.repeat(4000) })),
        Small: () => Promise.reject(Object.assign(new Error('small'), { details: { n: 1 } })),
      },
      'E',
    )
    await pair(a, b)
    await expect(a.request('b', 'E.Fail')).rejects.toMatchObject({ remoteCode: 'E_BIG', details: undefined })
    await expect(a.request('b', 'E.Small')).rejects.toMatchObject({ details: { n: 1 } })
    expect(a.activeConnections()).toEqual(['b'])
    expect(a.stats()).toMatchObject({ dropped: 0 })
  })

  it('TIMEOUT names the method and the timeout', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register({ Hang: () => new Promise(() => {}) }, 'Slow')
    await pair(a, b)
    await expect(a.request('b', 'Slow.Hang', null, { timeout: 50 })).rejects.toThrow('no reply from b to Slow.Hang within 50 ms')
  })
})

describe('mistakes caught where they are made', () => {
  it.each([
    [{ timeout: 500 }, '"timeout" is not an option of new Bilateral(); did you mean callTimeout?'],
    [{ timout: 500 }, '"timout" is not an option of new Bilateral(); did you mean callTimeout?'],
    [
      { pingInterval: 5000 },
      'option pingInterval 5000 does not fit peerTimeout 6000 (the default): peerTimeout must be at least 2 × pingInterval; set peerTimeout too',
    ],
    [{ reconnectMin: 9000 }, 'option reconnectMin 9000 does not fit reconnectMax 5000 (the default)'],
    [{ pingIntervl: 5 }, 'did you mean pingInterval?'],
  ])('new Bilateral(%o) is refused: %s', (extra, message) => {
    const make = () => new Bilateral({ network: 'n', name: 'x', ...(extra as object) })
    expect(make).toThrow(BilateralError)
    expect(make).toThrow(message)
    try {
      make()
    } catch (error) {
      expect((error as BilateralError).code).toBe('INVALID_ARGUMENT')
    }
  })

  it('call options: positional values, unknown names and a peer where a list goes are refused, not ignored', async () => {
    const a = makeNode('a')
    const call = (...params: unknown[]) => (a.call as (...p: unknown[]) => Promise<unknown>)(...params)
    await expect(call(['b'], 'A.B', {}, 300)).rejects.toThrow(
      'the options of call() must be an object such as { timeout: 500 }, not 300 (a number)',
    )
    await expect(call(['b'], 'A.B', {}, { timout: 300 })).rejects.toThrow('"timout" is not an option of call(); did you mean timeout?')
    await expect(call(['b'], 'A.B', {}, { callTimeout: 300 })).rejects.toThrow('did you mean timeout?')
    await expect(call('b', 'A.B', {})).rejects.toThrow(`not "b" (a string): call(['b'], ...), or request('b', ...) for one peer`)
    await expect((a.cast as (...p: unknown[]) => Promise<unknown>)(['b'], 'A.B', {}, 5)).rejects.toThrow(
      'the options of cast() must be an object',
    )
    await expect(a.waitForPeers(['b'], 300 as never)).rejects.toThrow('the options of waitForPeers() must be an object')
    expect(() => a.stream(['b'], 'A.B', {}, { deadline: 1 } as never)).toThrow(
      '"deadline" is not an option of stream(); did you mean timeout?',
    )
    expect(() => a.service('Arith', { peer: 'b', peers: ['c'] })).toThrow('give peer (one) or peers (several), not both')
  })

  it("listen('127.0.0.1:0') and connect() without a scheme say to add tcp://", async () => {
    const a = makeNode('a')
    await expect(a.listen('127.0.0.1:0')).rejects.toThrow('write tcp://127.0.0.1:0')
    await expect(a.listen('127.0.0.1:0')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    expect(() => a.connect('b', 'localhost:7000')).toThrow('write tcp://localhost:7000')
    expect(() => a.connect('tcp://127.0.0.1:7000', 'b')).toThrow(`takes the peer's name first: connect("b", "tcp://127.0.0.1:7000")?`)
  })

  it('register() options: an unknown one is refused with the one meant', () => {
    const a = makeNode('a')
    expect(() => a.register(new Arith(), 'Arith', { peer: ['b'] } as never)).toThrow(
      '"peer" is not an option of register(); did you mean peers?',
    )
    expect(() => a.register(new Arith(), 'Arith', { method: ['SumDiff'] } as never)).toThrow('did you mean methods?')
    expect(a.register(new Arith(), 'Arith', { peers: ['b'] })).toEqual(['Arith.SumDiff', 'Arith.Fail'])
  })

  it('a call made right after connect() waits for that peer within its own timeout when asked (waitForPeers), and says why without', async () => {
    const a = makeNode('a')
    const b = makeNode('b')
    b.register(new Arith())
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    a.connect('b', endpoint)
    const [eager] = await a.call(['b'], 'Arith.SumDiff', { A: 1, B: 1 })
    expect(eager).toMatchObject({ ok: false, error: { code: 'NOT_CONNECTED' } })
    expect(eager!.ok === false && eager!.error.message).toMatch(/b is not connected yet \(connecting; pass waitForPeers: true/)
    const [waited] = await a.call(['b'], 'Arith.SumDiff', { A: 1, B: 1 }, { waitForPeers: true, timeout: 3000 })
    expect(waited).toEqual({ from: 'b', ok: true, reply: { Sum: 2, Diff: 0 } })
    // A peer never dialled is not waited for: NOT_CONNECTED at once, saying so.
    const started = performance.now()
    const [never] = await a.call(['zed'], 'Arith.SumDiff', {}, { waitForPeers: true, timeout: 3000 })
    expect(performance.now() - started).toBeLessThan(1000)
    expect(never).toMatchObject({
      ok: false,
      error: { code: 'NOT_CONNECTED', message: 'zed is not connected (not dialled by this node, and it has not dialled us)' },
    })
  })

  it('waitForPeers: its options are checked before it waits, and it waits no longer than its parent call may', async () => {
    const a = makeNode('a')
    a.connect('gone', 'tcp://127.0.0.1:1')
    await expect(a.call(['gone'], 'X.Y', null, { waitForPeers: true, signal: { aborted: false } as never })).rejects.toThrow(
      'signal must be an AbortSignal',
    )
    await expect(a.call(['gone'], 'X.Y', null, { waitForPeers: 'yes' as never })).rejects.toThrow('waitForPeers must be a boolean')
    expect(() => a.stream(['gone'], 'X.Y', null, { waitForPeers: true })).toThrow('stream() cannot wait for peers')
    // Aborted while it waits: CANCELLED at once, as any call whose signal aborts.
    const controller = new AbortController()
    const waiting = a.call(['gone'], 'X.Y', null, { waitForPeers: true, signal: controller.signal, timeout: 10_000 })
    setTimeout(() => controller.abort(), 20)
    expect(await within(waiting, 2000, 'the aborted call')).toMatchObject([{ from: 'gone', ok: false, error: { code: 'CANCELLED' } }])
    // A handler's onward call waits within what is left of its caller's deadline, and stops when its caller cancels.
    const b = makeNode('b')
    let waited = -1
    let result: unknown
    b.connect('gone', 'tcp://127.0.0.1:1')
    b.register(
      {
        Onward: async (_: unknown, ctx: CallContext) => {
          const began = performance.now()
          ;[result] = await ctx.call(['gone'], 'X.Y', null, { waitForPeers: true })
          waited = performance.now() - began
        },
      },
      'H',
    )
    await pair(a, b)
    // Its caller waits 250 ms; the onward call waits no longer (then its peer is NOT_CONNECTED), not the 2 s callTimeout.
    await a.call(['b'], 'H.Onward', null, { timeout: 250 })
    await within(
      (async () => {
        while (waited < 0) await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      3000,
      'the onward call',
    )
    expect(waited).toBeLessThan(600)
    expect(result).toMatchObject({ ok: false, error: { code: 'NOT_CONNECTED' } })
  })

  it('waitForPeers gives up at the call timeout, and an unreachable peer says what its dialling met', async () => {
    const a = makeNode('a')
    a.connect('gone', 'tcp://127.0.0.1:1')
    const [result] = await within(a.call(['gone'], 'X.Y', null, { waitForPeers: true, timeout: 300 }), 3000, 'the call')
    expect(result).toMatchObject({ ok: false, error: { code: 'NOT_CONNECTED' } })
    expect(result!.ok === false && result!.error.message).toMatch(/^gone is not connected \(.*127\.0\.0\.1:1/)
  })

  it('call([]) with no peer at all warns once per node, and with waitForPeers waits for the first', async () => {
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    try {
      const a = makeNode('a')
      expect(await a.call([], 'Arith.SumDiff', { A: 1, B: 1 })).toEqual([])
      expect(await a.call([], 'Arith.SumDiff', { A: 1, B: 1 })).toEqual([])
      await within(new Promise<void>((resolve) => setImmediate(resolve)), 1000, 'the warning')
      const ours = warnings.filter((w) => (w as { code?: string }).code === 'BILATERAL_NO_PEERS')
      expect(ours.length).toBe(1)
      expect(ours[0]!.message).toContain('reached no one')
      const b = makeNode('b')
      b.register(new Arith())
      const endpoint = await b.listen('tcp://127.0.0.1:*')
      const pending = a.call([], 'Arith.SumDiff', { A: 2, B: 1 }, { waitForPeers: true, timeout: 3000 })
      a.connect('b', endpoint)
      expect(await pending).toEqual([{ from: 'b', ok: true, reply: { Sum: 3, Diff: 1 } }])
    } finally {
      process.off('warning', onWarning)
    }
  })
})

describe('CommonJS', () => {
  it('where Node cannot require() an ES module, require says what to do instead of a generic error', async () => {
    ensureBuilt()
    const entry = new URL('../dist/index.cjs', import.meta.url).pathname
    const child = spawn(process.execPath, ['--no-experimental-require-module', '-e', `require(${JSON.stringify(entry)})`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let err = ''
    child.stderr.on('data', (d: Buffer) => (err += d))
    const code = await within(new Promise((resolve) => child.on('exit', resolve)), 15_000, 'the child')
    expect(code).toBe(1)
    expect(err).toContain('bilateral is an ES module, and this Node.js')
    expect(err).toContain("await import('bilateral')")
  })
})

describe('libsodium is readied lazily', () => {
  it('an encrypted node that connects in the same turn it is imported still joins (its first JOIN waits for the crypto library)', async () => {
    ensureBuilt()
    const server = await generateKeypair()
    const client = await generateKeypair()
    const b = makeNode(server.publicKey, { keypair: server, name: undefined })
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    const script = `
      const { Bilateral } = require(${JSON.stringify(new URL('../dist/index.cjs', import.meta.url).pathname)})
      const { sodiumPending } = require(${JSON.stringify(new URL('../dist/crypto.js', import.meta.url).pathname)})
      const node = new Bilateral({ network: 'test net', keypair: ${JSON.stringify(client)}, ...${JSON.stringify(FAST)} })
      const early = sodiumPending() !== undefined
      let refused = ''
      try { node.connect(${JSON.stringify(client.publicKey.replace(/./, (c) => (c === 'a' ? 'b' : 'a')))}, 'tcp://127.0.0.1:notaport') } catch (e) { refused = e.code }
      node.connect(${JSON.stringify(server.publicKey)}, ${JSON.stringify(endpoint)})
      node.waitForPeers([${JSON.stringify(server.publicKey)}], { timeout: 5000 }).then(
        () => { console.log(JSON.stringify({ early, refused, up: true })); return node.close() },
        (e) => { console.log(JSON.stringify({ early, refused, up: false, why: e.message })); return node.close() })
    `
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d))
    const code = await within(new Promise((resolve) => child.on('exit', resolve)), 15_000, 'the child')
    expect(code).toBe(0)
    // A bad endpoint is refused at once, crypto library ready or not.
    expect(JSON.parse(out)).toEqual({ early: true, refused: 'INVALID_ARGUMENT', up: true })
  })
})
