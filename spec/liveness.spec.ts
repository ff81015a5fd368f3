import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Arith, FAST, closeAll, deferred, ensureBuilt, makeNode, nextEvent, pair } from './helpers.js'
import type { Bilateral, BilateralError } from '../lib/index.js'

const PEER = fileURLToPath(new URL('./fixtures/peer.mjs', import.meta.url))
const LIFECYCLE = fileURLToPath(new URL('./fixtures/lifecycle.mjs', import.meta.url))
const children: ChildProcess[] = []

beforeAll(ensureBuilt)
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  await closeAll()
})

function startPeer(...args: string[]): ChildProcess {
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  return child
}

describe('joining', () => {
  it('a node that never listens is called back over the connection it dialled', async () => {
    const hidden = makeNode('hidden')
    const open = makeNode('open')
    hidden.register({ Ping: () => 'pong' }, 'Svc')
    await pair(hidden, open)
    expect(await open.call(['hidden'], 'Svc.Ping')).toEqual([{ from: 'hidden', ok: true, reply: 'pong' }])
  })

  it('simultaneous cross-dials converge on one connection that both sides agree on', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    const [ea, eb] = await Promise.all([alpha.listen('tcp://127.0.0.1:*'), beta.listen('tcp://127.0.0.1:*')])
    const t0 = performance.now()
    alpha.connect('beta', eb)
    beta.connect('alpha', ea)
    await Promise.all([alpha.waitForPeers(['beta']), beta.waitForPeers(['alpha'])])
    // Wait until exactly one connection serves the pair and both sides agree which.
    const agreed = () => {
      const [a, b] = [alpha.links(), beta.links()]
      return a.length === 1 && b.length === 1 && a[0]!.direction !== b[0]!.direction
    }
    const deadline = performance.now() + 2000
    while (!agreed()) {
      if (performance.now() > deadline) throw new Error(`no convergence: ${JSON.stringify([alpha.links(), beta.links()])}`)
      await new Promise((r) => setImmediate(r))
    }
    expect(performance.now() - t0).toBeLessThan(1000)
    alpha.register({ Who: () => 'alpha' }, 'Id')
    beta.register({ Who: () => 'beta' }, 'Id')
    expect((await alpha.call([], 'Id.Who'))[0]).toMatchObject({ reply: 'beta' })
    expect((await beta.call([], 'Id.Who'))[0]).toMatchObject({ reply: 'alpha' })
    // Stays converged: no flapping over several ping periods.
    const flaps: string[] = []
    alpha.on('peer:down', (n) => flaps.push(`alpha lost ${n}`))
    beta.on('peer:down', (n) => flaps.push(`beta lost ${n}`))
    await expect(nextEvent(alpha, 'peer:down', 5 * FAST.pingInterval)).rejects.toThrow()
    expect(flaps).toEqual([])
    expect(agreed()).toBe(true)
  })

  it('calls made right after a simultaneous cross-dial are all answered, in both directions', async () => {
    for (let round = 0; round < 5; round++) {
      const alpha = makeNode(`alpha${round}`)
      const beta = makeNode(`beta${round}`)
      alpha.register(new Arith())
      beta.register(new Arith())
      const [ea, eb] = await Promise.all([alpha.listen('tcp://127.0.0.1:*'), beta.listen('tcp://127.0.0.1:*')])
      alpha.connect(beta.name, eb)
      beta.connect(alpha.name, ea)
      await Promise.all([alpha.waitForPeers([beta.name]), beta.waitForPeers([alpha.name])])
      const results = await Promise.all([
        ...Array.from({ length: 4 }, () => alpha.call([beta.name], 'Arith.SumDiff', { A: 1, B: 1 }, { timeout: 1000 })),
        ...Array.from({ length: 4 }, () => beta.call([alpha.name], 'Arith.SumDiff', { A: 1, B: 1 }, { timeout: 1000 })),
      ])
      expect(results.flat().filter((r) => !r.ok)).toEqual([])
    }
  })

  it('a JOIN claiming the name of a peer we dialled does not take over that link', async () => {
    // "aaa" sorts before "zzz", so a name-order rule alone would let the claimant win.
    const zzz = makeNode('zzz')
    const real = makeNode('aaa')
    const impostor = makeNode('aaa')
    real.register({ Who: () => 'real' }, 'Id')
    impostor.register({ Who: () => 'impostor' }, 'Id')
    const zzzAddress = await zzz.listen('tcp://127.0.0.1:*')
    await pair(zzz, real)
    impostor.connect('zzz', zzzAddress)
    // The impostor's JOIN is answered PART CROSS; its dialler stands by and retries later.
    const ticks = 5
    for (let i = 0; i < ticks; i++) {
      expect(await zzz.call(['aaa'], 'Id.Who')).toEqual([{ from: 'aaa', ok: true, reply: 'real' }])
      await expect(nextEvent(zzz, 'peer:down', FAST.joinInterval)).rejects.toThrow()
    }
    expect(zzz.links()).toEqual([{ peer: 'aaa', direction: 'outbound' }])
    expect(impostor.activeConnections()).toEqual([])
  })

  it('a peer with another network name never becomes active, and both sides say why', async () => {
    const ours = makeNode('ours')
    const theirs = makeNode('theirs', { network: 'other net' })
    const endpoint = await theirs.listen('tcp://127.0.0.1:*')
    const refusedThere = nextEvent<[string, BilateralError]>(theirs, 'peer:refused')
    const refusedHere = nextEvent<[string, BilateralError]>(ours, 'peer:refused')
    ours.connect('theirs', endpoint)
    const [[who, why], [whoHere, whyHere]] = await Promise.all([refusedThere, refusedHere])
    expect(who).toBe('ours')
    expect(why.code).toBe('NETWORK_MISMATCH')
    expect(whoHere).toBe('theirs')
    expect(whyHere.code).toBe('NETWORK_MISMATCH')
    // Retrying cannot fix it: waitForPeers says so at once.
    await expect(ours.waitForPeers(['theirs'], { timeout: 300 })).rejects.toMatchObject({ code: 'NETWORK_MISMATCH', peer: 'theirs' })
    expect(ours.activeConnections()).toEqual([])
    expect(theirs.activeConnections()).toEqual([])
  })

  it('dialling an address where another name answers is refused as WRONG_NAME', async () => {
    const me = makeNode('me')
    const actual = makeNode('actual')
    const endpoint = await actual.listen('tcp://127.0.0.1:*')
    const refused = nextEvent<[string, BilateralError]>(me, 'peer:refused')
    me.connect('expected', endpoint)
    const ups: string[] = []
    actual.on('peer:up', (n) => ups.push(n))
    const [name, error] = await refused
    expect(name).toBe('expected')
    expect(error.code).toBe('WRONG_NAME')
    expect(me.activeConnections()).toEqual([])
    // Refused before it was ever accepted: the listener never saw it as a peer.
    await expect(me.waitForPeers(['expected'], { timeout: 3 * FAST.joinInterval })).rejects.toMatchObject({
      code: 'WRONG_NAME',
      peer: 'expected',
    })
    expect(ups).toEqual([])
  })

  it('a second connection claiming an active name does not take over its traffic', async () => {
    const server = makeNode('server')
    const real = makeNode('twin')
    const impostor = makeNode('twin')
    real.register({ Who: () => 'real' }, 'Id')
    impostor.register({ Who: () => 'impostor' }, 'Id')
    const endpoint = await pair(real, server)
    const refused = nextEvent<[string, BilateralError]>(server, 'peer:refused')
    impostor.connect('server', endpoint)
    const [name, error] = await refused
    expect([name, error.code]).toEqual(['twin', 'DUPLICATE'])
    expect(await server.call(['twin'], 'Id.Who')).toEqual([{ from: 'twin', ok: true, reply: 'real' }])
  })
})

describe('leaving', () => {
  it('a listening peer that closes sends PART: the dialler learns at once and its pending calls fail PEER_DOWN', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    const entered = deferred()
    beta.register({ Hang: () => (entered.resolve(), new Promise(() => {})) }, 'Slow')
    await pair(alpha, beta)
    const pending = alpha.call(['beta'], 'Slow.Hang', null, { timeout: 30_000 })
    await entered.promise
    const down = nextEvent<[string, string]>(alpha, 'peer:down', 2000)
    await beta.close()
    expect(await down).toEqual(['beta', 'PART'])
    expect(await pending).toMatchObject([{ from: 'beta', ok: false, error: { code: 'PEER_DOWN' } }])
  })

  it('disconnect() parts the link: both sides see the peer go down', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    await pair(alpha, beta)
    const there = nextEvent<[string, string]>(beta, 'peer:down', 2000)
    const here = nextEvent<[string, string]>(alpha, 'peer:down', 2000)
    await alpha.disconnect('beta')
    expect(await here).toEqual(['beta', 'DISCONNECT'])
    expect(await there).toEqual(['alpha', 'PART'])
    await expect(alpha.disconnect('beta')).rejects.toMatchObject({ code: 'NOT_CONNECTED' })
    // And connect() again works.
    alpha.connect('beta', (await beta.listen('tcp://127.0.0.1:*')) as string)
    await alpha.waitForPeers(['beta'], { timeout: 5000 })
  })

  it('close() settles pending calls with CLOSED and the process then exits on its own', async () => {
    const host = makeNode('host')
    const endpoint = await host.listen('tcp://127.0.0.1:*')
    const child = startPeer('closer', 'host', endpoint, 'close-pending')
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d))
    const [code] = (await once(child, 'exit', { signal: AbortSignal.timeout(10_000) })) as [number]
    expect(code).toBe(0)
    expect(JSON.parse(out)).toEqual(['CLOSED'])
  })

  it('restarts, reconnects and close() mid-call leave no table entry, timer or socket: the process exits on its own', async () => {
    const child = spawn(process.execPath, [LIFECYCLE], { stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(child)
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d))
    const [code] = (await once(child, 'exit', { signal: AbortSignal.timeout(20_000) })) as [number]
    expect(code).toBe(0)
    expect(JSON.parse(out)).toEqual({
      scenarios: {
        'listener restarts on the same address': 'ok',
        'both sides restart': 'ok ok',
        'disconnect() and connect() again': { results: ['ok', 'ok', 'ok'], peersAfterDisconnect: [0, 0] },
        // b closed with two of a's calls running in its handlers: a's calls end PEER_DOWN at b's PART,
        // b's own pending call CLOSED; the slow handler's late result was dropped quietly.
        'close() with calls and handlers in flight': {
          runningAtClose: 2,
          aSaw: ['PEER_DOWN', 'PEER_DOWN'],
          bSaw: ['CLOSED'],
          pendingAfter: 0,
        },
      },
      leaks: [],
      errors: [],
    })
  })

  it('close() reports each active peer down with reason CLOSED', async () => {
    const alpha = makeNode('alpha')
    await pair(alpha, makeNode('beta'))
    await pair(makeNode('gamma'), alpha)
    const downs: string[] = []
    alpha.on('peer:down', (peer, reason) => downs.push(`${peer} ${reason}`))
    await alpha.close()
    expect(downs.sort()).toEqual(['beta CLOSED', 'gamma CLOSED'])
  })

  it('after close(), the node refuses work with CLOSED and its tables are empty', async () => {
    const alpha = makeNode('alpha')
    const beta = makeNode('beta')
    beta.register({ Hang: () => new Promise(() => {}) }, 'Slow')
    await pair(alpha, beta)
    const pending = alpha.call(['beta'], 'Slow.Hang', null, { timeout: 30_000, signal: new AbortController().signal })
    // A handler running on alpha for beta is in alpha's table too, until close().
    alpha.register({ Hang: () => new Promise(() => {}) }, 'Slow')
    void beta.call(['alpha'], 'Slow.Hang', null, { timeout: 30_000 })
    for (let tries = 0; alpha.stats().running === 0; tries++) {
      if (tries > 1000) throw new Error('beta’s call never started on alpha within 5 s')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    expect(alpha.stats()).toMatchObject({ signals: 1, running: 1, runningPeers: 1 })
    await alpha.close()
    expect(await pending).toMatchObject([{ ok: false, error: { code: 'CLOSED' } }])
    expect(alpha.stats()).toMatchObject({
      pending: 0,
      timerQueues: 0,
      inflight: 0,
      signals: 0,
      running: 0,
      runningBytes: 0,
      runningPeers: 0,
      peers: 0,
      inbound: 0,
      connections: 0,
      unjoined: 0,
      ignored: 0,
    })
    await expect(alpha.call([], 'Slow.Hang')).rejects.toMatchObject({ code: 'CLOSED' })
    expect(() => alpha.connect('x', 'tcp://127.0.0.1:1')).toThrow(expect.objectContaining({ code: 'CLOSED' }))
  })
})

describe('an idle link', () => {
  it('stays up past stallTimeout: the dialler pings it, both sides hear each other', async () => {
    const stall = { stallTimeout: FAST.peerTimeout }
    const alpha = makeNode('alpha', stall)
    const beta = makeNode('beta', stall)
    await pair(alpha, beta)
    const downs = Promise.race([
      nextEvent(alpha, 'peer:down', 4 * stall.stallTimeout),
      nextEvent(beta, 'peer:down', 4 * stall.stallTimeout),
    ])
    await expect(downs).rejects.toThrow()
    expect(alpha.activeConnections()).toEqual(['beta'])
    expect(beta.activeConnections()).toEqual(['alpha'])
  })
})

describe('a busy peer is not a dead one', () => {
  const BLOCK = 3 * FAST.peerTimeout

  /**
   * Block the child's event loop for 3 × peerTimeout while we send it 3,000 casts, each its own ZeroMQ message
   * (three times libzmq's default receive queue); neither side may declare the other down, and everything arrives.
   */
  async function blockAndCheck(host: Bilateral, child: string): Promise<void> {
    const downs: string[] = []
    host.on('peer:down', (peer, reason) => downs.push(`${peer} ${reason}`))
    const t0 = performance.now()
    const call = host.call([child], 'Arith.Block', BLOCK, { timeout: BLOCK + 5000 })
    for (let i = 0; i < 3000; i++) {
      expect(await host.cast([child], 'Arith.Note')).toEqual([child])
    }
    const blocked = await call
    expect(blocked).toEqual([{ from: child, ok: true, reply: BLOCK }])
    expect(await host.call([child], 'Arith.Notes')).toEqual([{ from: child, ok: true, reply: 3000 }])
    expect(performance.now() - t0).toBeGreaterThanOrEqual(BLOCK)
    // Its pings were unanswered for 3 × peerTimeout, yet its link stayed up: ZeroMQ's heartbeats were answered by libzmq's thread.
    expect(await host.call([child], 'Arith.SumDiff', { A: 2, B: 1 })).toEqual([{ from: child, ok: true, reply: { S: 3, D: 1 } }])
    expect(await host.call([child], 'Arith.Downs')).toEqual([{ from: child, ok: true, reply: [] }])
    expect(downs).toEqual([])
    expect(host.activeConnections()).toEqual([child])
  }

  it('when the busy node dialled', async () => {
    const host = makeNode('host')
    const endpoint = await host.listen('tcp://127.0.0.1:*')
    const up = nextEvent(host, 'peer:up')
    startPeer('busy', 'host', endpoint)
    await up
    await blockAndCheck(host, 'busy')
  })

  it('when the busy node listens', async () => {
    const host = makeNode('host')
    const child = startPeer('busy', 'host', '-', 'listen')
    const [line] = (await once(child.stdout!, 'data')) as [Buffer]
    host.connect('busy', line.toString().trim())
    await host.waitForPeers(['busy'], { timeout: 5000 })
    await blockAndCheck(host, 'busy')
  })

  it('a peer that stays stalled past stallTimeout is declared down with TIMEOUT', async () => {
    const host = makeNode('host', { stallTimeout: FAST.peerTimeout })
    const endpoint = await host.listen('tcp://127.0.0.1:*')
    const up = nextEvent(host, 'peer:up')
    startPeer('stuck', 'host', endpoint)
    await up
    const down = nextEvent<[string, string]>(host, 'peer:down', 5000)
    void host.call(['stuck'], 'Arith.Block', BLOCK, { timeout: 100 })
    expect(await down).toEqual(['stuck', 'TIMEOUT'])
  })
})

describe('crashes', () => {
  it('a peer SIGKILLed in a stream of calls: its calls end TIMEOUT or PEER_DOWN, the other peer is unaffected, it rejoins on restart', async () => {
    const host = makeNode('host')
    const endpoint = await host.listen('tcp://127.0.0.1:*')
    const up = Promise.all([nextEvent(host, 'peer:up'), nextEvent(host, 'peer:up')])
    const victim = startPeer('victim', 'host', endpoint)
    startPeer('steady', 'host', endpoint)
    await up
    await host.waitForPeers(['victim', 'steady'], { timeout: 5000 })
    expect(await host.call(['victim'], 'Arith.Pid')).toEqual([{ from: 'victim', ok: true, reply: victim.pid }])

    // Calls to both peers, 8 in flight at a time, while the victim is killed mid-stream.
    const codes = { victim: new Map<string, number>(), steady: new Map<string, number>() }
    let stop = false
    let killedAt = Infinity
    // Conditions the test waits for, checked as results come in (each bounded by its own timeout).
    const waits = new Set<{ holds: () => boolean; resolve: () => void }>()
    const until = (holds: () => boolean, ms: number): Promise<void> => {
      const wait = deferred<void>()
      const entry = { holds, resolve: () => wait.resolve() }
      waits.add(entry)
      const timer = setTimeout(() => wait.reject(new Error(`condition not met within ${ms} ms`)), ms)
      return wait.promise.finally(() => {
        clearTimeout(timer)
        waits.delete(entry)
      })
    }
    const stream = async (): Promise<void> => {
      for (let i = 0; !stop && i < 100_000; i++) {
        const results = await host.call<{ S: number }>(
          ['victim', 'steady'],
          'Arith.SumDiff',
          { A: i, B: 1 },
          { timeout: 2 * FAST.peerTimeout },
        )
        for (const r of results) {
          const code = r.ok ? (r.reply.S === i + 1 ? 'ok' : 'WRONG') : r.error.code
          const seen = codes[r.from as 'victim' | 'steady']
          seen.set(code, (seen.get(code) ?? 0) + 1)
        }
        for (const wait of waits) if (wait.holds()) wait.resolve()
      }
    }
    const down = nextEvent<[string, string]>(host, 'peer:down', 5000)
    const streams = Array.from({ length: 8 }, stream)
    await until(() => (codes.victim.get('ok') ?? 0) > 200, 5000)
    killedAt = performance.now()
    victim.kill('SIGKILL')
    // The kernel closes a killed process's connections: ZeroMQ sees it at once.
    expect(await down).toEqual(['victim', 'HEARTBEAT'])
    expect(performance.now() - killedAt).toBeLessThan(FAST.peerTimeout)
    await until(() => (codes.steady.get('ok') ?? 0) > (codes.victim.get('ok') ?? 0) + 200, 5000)
    stop = true
    await Promise.all(streams)
    // Replies in flight at the kill are lost; those calls end PEER_DOWN once it is declared down (or TIMEOUT before),
    // later ones NOT_CONNECTED. The steady peer answered every call, correctly.
    expect([...codes.victim.keys()].sort()).toEqual(expect.arrayContaining(['ok']))
    for (const code of codes.victim.keys()) expect(['ok', 'PEER_DOWN', 'TIMEOUT', 'NOT_CONNECTED']).toContain(code)
    expect([...codes.steady.keys()]).toEqual(['ok'])
    expect(host.stats().pending).toBe(0)

    const back = nextEvent(host, 'peer:up', 10_000)
    const second = startPeer('victim', 'host', endpoint)
    await back
    expect(await host.call(['victim'], 'Arith.Pid')).toEqual([{ from: 'victim', ok: true, reply: second.pid }])
  })

  it('a restarted listener is rejoined by its dialler without calling connect() again', async () => {
    const dialler = makeNode('dialler')
    const first = makeNode('listener')
    const endpoint = await pair(dialler, first)
    await first.close()
    const again = makeNode('listener')
    again.register({ Ping: () => 'pong' }, 'Svc')
    const up = nextEvent(dialler, 'peer:up', 10_000)
    await again.listen(endpoint)
    await up
    expect(await dialler.call(['listener'], 'Svc.Ping')).toEqual([{ from: 'listener', ok: true, reply: 'pong' }])
  })
})
