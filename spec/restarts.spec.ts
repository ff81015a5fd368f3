import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { closeAll, deferred, ensureBuilt, makeNode, nextEvent, within } from './helpers.js'
import type { Bilateral } from '../lib/index.js'

const RESTARTER = fileURLToPath(new URL('./fixtures/restarter.mjs', import.meta.url))
/** Calls each incarnation of the caller makes; ids 1 to N in both, as every node starts counting at 1. */
const N = 200
const children: ChildProcess[] = []
const relays: HoldingRelay[] = []

beforeAll(ensureBuilt)
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  for (const relay of relays.splice(0)) await relay.close()
  await closeAll()
})

/** A macrotask later: every microtask queued so far (promise reactions, answers they post) has run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * Serve `Slow.Echo({ token, i })` on `node`: each call is held until its
 * token's gate opens, then answered with its own arguments, so a reply names
 * the incarnation (token) and the call (i) it answers.
 */
function gatedEcho(node: Bilateral) {
  const arrived = new Map<string, number>()
  const gates = new Map<string, ReturnType<typeof deferred<void>>>()
  const watchers = new Set<{ token: string; n: number; resolve: () => void }>()
  const gate = (token: string) => {
    let g = gates.get(token)
    if (g === undefined) gates.set(token, (g = deferred()))
    return g
  }
  node.register(
    {
      Echo: (args: { token: string; i: number }) => {
        arrived.set(args.token, (arrived.get(args.token) ?? 0) + 1)
        for (const w of watchers) if ((arrived.get(w.token) ?? 0) >= w.n) w.resolve()
        return gate(args.token).promise.then(() => args)
      },
    },
    'Slow',
  )
  return {
    /** Resolves once `n` calls with `token` have reached the handler. */
    arrivals(token: string, n: number, ms = 5000): Promise<void> {
      if ((arrived.get(token) ?? 0) >= n) return Promise.resolve()
      const wait = deferred()
      const watcher = { token, n, resolve: () => wait.resolve() }
      watchers.add(watcher)
      return within(wait.promise, ms, `${n} calls with token ${token} reaching the handler (${arrived.get(token) ?? 0} did)`).finally(() =>
        watchers.delete(watcher),
      )
    },
    /** Let every call with `token` answer; resolves once their answers have been produced. */
    async open(token: string): Promise<void> {
      gate(token).resolve()
      await turn()
    },
  }
}

/** How the replies to one incarnation's calls matched: `{ token, i }` of its own is right, anything else wrong. */
interface Summary {
  right: number
  wrong: number
  failed: Record<string, number>
  strays: number
}

/** One run of the caller named "caller": its summary once its calls have ended, and how to end the run early. */
interface Incarnation {
  /** The endpoint it listens on, when it listens. */
  endpoint: string | undefined
  summary: Promise<Summary>
  /** End it abruptly (SIGKILL) or cleanly (close()), as the test says. */
  stop(): Promise<void>
}

/** Lines of a child's stdout, each waited for at most `ms`. */
function lines(child: ChildProcess): (ms: number) => Promise<string> {
  const ready: string[] = []
  const waiting: ((line: string) => void)[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const take = waiting.shift()
    if (take === undefined) ready.push(line)
    else take(line)
  })
  return (ms) => {
    const line = ready.shift()
    if (line !== undefined) return Promise.resolve(line)
    const next = deferred<string>()
    waiting.push(next.resolve)
    return within(next.promise, ms, `a line from the caller process ${child.pid}`).finally(() => {
      const at = waiting.indexOf(next.resolve)
      if (at >= 0) waiting.splice(at, 1)
    })
  }
}

/** The caller as a child process (restarted by SIGKILL and a new process). */
async function callerProcess(side: 'dial' | 'listen', address: string, token: string): Promise<Incarnation> {
  const child = spawn(process.execPath, [RESTARTER, 'caller', 'peer', side, address, token, String(N)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.push(child)
  const next = lines(child)
  const endpoint = side === 'listen' ? (await next(10_000)).replace(/^listening /, '') : undefined
  return {
    endpoint,
    summary: next(15_000).then((line) => JSON.parse(line) as Summary),
    stop: async () => {
      const exited = once(child, 'exit', { signal: AbortSignal.timeout(5000) })
      child.kill('SIGKILL')
      await exited
    },
  }
}

/** The caller as a node of this process (restarted by close() and a new node). */
async function callerNode(side: 'dial' | 'listen', address: string, token: string): Promise<Incarnation> {
  const node = makeNode('caller')
  let endpoint: string | undefined
  if (side === 'listen') endpoint = await node.listen(address)
  else node.connect('peer', address)
  const summary = node.waitForPeers(['peer'], { timeout: 5000 }).then(async () => {
    const all = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        node.call<{ token: string; i: number }>(['peer'], 'Slow.Echo', { token, i }, { timeout: 10_000 }),
      ),
    )
    const s: Summary = { right: 0, wrong: 0, failed: {}, strays: 0 }
    for (const [i, [r]] of all.entries()) {
      if (!r!.ok) s.failed[r!.error.code] = (s.failed[r!.error.code] ?? 0) + 1
      else if (r!.reply.token === token && r!.reply.i === i) s.right++
      else s.wrong++
    }
    s.strays = node.stats().strayReplies ?? 0
    return s
  })
  return { endpoint, summary, stop: () => node.close() }
}

/**
 * The caller makes N calls that the peer holds; it is stopped (`how`) and a
 * new incarnation under the same name joins on the same side (`side`: the
 * caller dials the peer, or listens and the peer dials it) and makes N calls
 * of its own, with the same call ids. Only then do the first run's handlers
 * finish; then the second's. Every reply the second run gets must be its own.
 */
async function restartWhileHandled(how: 'kill' | 'close', side: 'dial' | 'listen'): Promise<void> {
  const start = how === 'kill' ? callerProcess : callerNode
  const peer = makeNode('peer')
  const echo = gatedEcho(peer)
  const peerAddress = side === 'dial' ? await peer.listen('tcp://127.0.0.1:*') : undefined
  const first = await start(side, peerAddress ?? 'tcp://127.0.0.1:*', 'first')
  if (side === 'listen') peer.connect('caller', first.endpoint!)
  await peer.waitForPeers(['caller'], { timeout: 5000 })
  await echo.arrivals('first', N)

  const down = nextEvent<[string, string]>(peer, 'peer:down')
  await first.stop()
  expect((await down)[0]).toBe('caller')
  // The same side again: a listener restarts on the address its peer keeps dialling.
  const second = await start(side, peerAddress ?? first.endpoint!, 'second')
  await peer.waitForPeers(['caller'], { timeout: 5000 })
  await echo.arrivals('second', N)

  // The first run's answers are produced now, while the second run waits for calls 1..N of its own.
  await echo.open('first')
  const dropped = peer.stats().repliesDropped
  await echo.open('second')
  expect(await second.summary).toEqual({ right: N, wrong: 0, failed: {}, strays: 0 })
  expect(dropped).toBe(N)
}

describe('a reply reaches only the caller that asked', () => {
  it('a caller SIGKILLed and restarted while its dialled peer still handles its calls gets none of the old answers', async () => {
    await restartWhileHandled('kill', 'dial')
  })

  it('a listening caller SIGKILLed and restarted on its address while its peer still handles its calls gets none of the old answers', async () => {
    await restartWhileHandled('kill', 'listen')
  })

  it('a caller closed and made again under its name while its dialled peer still handles its calls gets none of the old answers', async () => {
    await restartWhileHandled('close', 'dial')
  })

  it('a listening caller closed and made again on its address while its peer still handles its calls gets none of the old answers', async () => {
    await restartWhileHandled('close', 'listen')
  })
})

/**
 * A TCP relay on 127.0.0.1 for one dialler, whose listener-to-dialler
 * direction can be held (kept in order, not dropped) and released.
 */
class HoldingRelay {
  private held: { to: Socket; chunk: Buffer }[] | undefined
  private readonly sockets = new Set<Socket>()
  /** Resolves when the dialler closes its connection. */
  readonly diallerGone = deferred()

  private constructor(
    private readonly server: Server,
    readonly address: string,
  ) {}

  static async start(target: string): Promise<HoldingRelay> {
    const { hostname, port } = new URL(target.replace(/^tcp:/, 'http:'))
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const relay = new HoldingRelay(server, `tcp://127.0.0.1:${(server.address() as { port: number }).port}`)
    server.on('connection', (dialler) => {
      const listener = createConnection({ host: hostname, port: Number(port) })
      for (const s of [dialler, listener]) {
        relay.sockets.add(s)
        s.on('error', () => s.destroy())
        s.on('close', () => relay.sockets.delete(s))
      }
      dialler.on('data', (chunk: Buffer) => listener.write(chunk))
      listener.on('data', (chunk: Buffer) => {
        if (relay.held === undefined) dialler.write(chunk)
        else relay.held.push({ to: dialler, chunk })
      })
      dialler.on('close', () => {
        listener.destroy()
        relay.diallerGone.resolve()
      })
      listener.on('close', () => dialler.destroy())
    })
    return relay
  }

  /** From now on, what the listener sends waits. */
  hold(): void {
    this.held ??= []
  }

  /** Send what waited, in order, and pass everything through again. */
  release(): void {
    const held = this.held ?? []
    this.held = undefined
    for (const { to, chunk } of held) if (!to.destroyed) to.write(chunk)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

describe('the cross-dial switch', () => {
  it('calls that went out on the losing connection are answered after it has closed, in both directions', async () => {
    const M = 50
    // "alpha" sorts first: the connection alpha dials wins, the one beta dials loses.
    // Beta's dial closes its socket joinInterval after it stood by: long enough for the held frames, on a loaded machine too.
    const alpha = makeNode('alpha', { joinInterval: 400 })
    const beta = makeNode('beta', { joinInterval: 400 })
    const alphaEcho = gatedEcho(alpha)
    const betaEcho = gatedEcho(beta)
    const [ea, eb] = await Promise.all([alpha.listen('tcp://127.0.0.1:*'), beta.listen('tcp://127.0.0.1:*')])
    const toAlpha = await HoldingRelay.start(ea) // beta dials alpha through it: the losing connection
    const toBeta = await HoldingRelay.start(eb) // alpha dials beta through it: the winning one
    relays.push(toAlpha, toBeta)
    // Each listener's STAY is held from the moment it accepts the other's JOIN, so both accept one: both links come up.
    // Each side calls the other at once, on the link that serves it then: alpha on the losing one.
    const calls: Promise<string>[] = []
    const callAt = (node: Bilateral, relay: HoldingRelay, peer: string) => {
      const up = deferred<string>()
      node.once('peer:up', () => {
        relay.hold()
        up.resolve(node.links()[0]!.direction)
        for (let i = 0; i < M; i++) {
          const call = node.call<{ token: string; i: number }>([peer], 'Slow.Echo', { token: node.name, i }, { timeout: 10_000 })
          calls.push(call.then(([r]) => (!r!.ok ? r!.error.code : r!.reply.token === node.name && r!.reply.i === i ? 'right' : 'wrong')))
        }
      })
      return up.promise
    }
    const alphaUp = callAt(alpha, toAlpha, 'beta')
    const betaUp = callAt(beta, toBeta, 'alpha')
    alpha.connect('beta', toBeta.address)
    beta.connect('alpha', toAlpha.address)
    expect(await within(Promise.all([alphaUp, betaUp]), 5000, 'both JOINs accepted')).toEqual(['inbound', 'inbound'])
    toAlpha.release()
    toBeta.release()
    await Promise.all([betaEcho.arrivals('alpha', M), alphaEcho.arrivals('beta', M)])
    // Beta's dial stands by and closes its socket: the connection alpha's calls came in on is gone.
    await within(toAlpha.diallerGone.promise, 5000, 'the losing connection closing')
    expect(alpha.links()).toEqual([{ peer: 'beta', direction: 'outbound' }])
    expect(beta.links()).toEqual([{ peer: 'alpha', direction: 'inbound' }])
    await betaEcho.open('alpha')
    await alphaEcho.open('beta')
    const outcomes: Record<string, number> = {}
    for (const outcome of await Promise.all(calls)) outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
    expect(outcomes).toEqual({ right: 2 * M })
    for (const node of [alpha, beta]) expect(node.stats()).toMatchObject({ repliesDropped: 0, strayReplies: 0 })
  })
})
