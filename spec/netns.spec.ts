import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'
import { canNetns, namespacePair } from './netns-pair.js'

// Two "hosts": network namespaces joined by a veth pair, each running a node
// in its own process. Needs root on Linux with iproute2; skipped otherwise.
const NODE = fileURLToPath(new URL('./fixtures/ns-node.mjs', import.meta.url))
const PEER_TIMEOUT = 600
const pair = namespacePair('bl', '10.231.77')
const { ns, addr } = pair
const children: ChildProcess[] = []

/** A node in namespace `space`, with its events as an async queue. */
function host(space: string, ...args: string[]) {
  const child = spawn('ip', ['netns', 'exec', space, process.execPath, NODE, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  const seen: Record<string, string>[] = []
  const waiting: { match: (e: Record<string, string>) => boolean; resolve: (e: Record<string, string>) => void }[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const event = JSON.parse(line) as Record<string, string>
    seen.push(event)
    for (const w of waiting.splice(0)) {
      if (w.match(event)) w.resolve(event)
      else waiting.push(w)
    }
  })
  /** The next event (after `from`) matching `fields`, within `ms`. */
  const next = (fields: Record<string, string>, ms: number, from = seen.length): Promise<Record<string, string>> => {
    const match = (e: Record<string, string>) => Object.entries(fields).every(([k, v]) => e[k] === v)
    const already = seen.slice(from).find(match)
    if (already !== undefined) return Promise.resolve(already)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${JSON.stringify(fields)} within ${ms} ms; saw ${JSON.stringify(seen)}`)), ms)
      waiting.push({ match, resolve: (e) => (clearTimeout(timer), resolve(e)) })
    })
  }
  return { next, mark: () => seen.length }
}

describe.skipIf(!canNetns)('a partition between two hosts (network namespaces joined by veth)', () => {
  beforeAll(() => {
    ensureBuilt()
    pair.make()
  })

  afterAll(() => {
    for (const child of children) child.kill('SIGKILL')
    pair.remove()
  })

  it('a cut link takes the peer down on both sides within peerTimeout, and restoring it heals the mesh', async () => {
    const alpha = host(ns.a, 'alpha', 'listen', `tcp://${addr.a}:*`)
    const { endpoint } = await alpha.next({ event: 'ready' }, 10_000)
    expect(endpoint).toMatch(new RegExp(`^tcp://${addr.a.replace(/\./g, '\\.')}:\\d+$`))
    const beta = host(ns.b, 'beta', 'dial', 'alpha', endpoint!)
    await Promise.all([alpha.next({ event: 'up', peer: 'beta' }, 10_000), beta.next({ event: 'up', peer: 'alpha' }, 10_000)])

    const [fromA, fromB] = [alpha.mark(), beta.mark()]
    const cutAt = performance.now()
    pair.link(false)
    const downs = await Promise.all([
      alpha.next({ event: 'down', peer: 'beta' }, 5_000, fromA),
      beta.next({ event: 'down', peer: 'alpha' }, 5_000, fromB),
    ])
    expect(downs.map((e) => e.reason)).toEqual(['HEARTBEAT', 'HEARTBEAT'])
    expect(performance.now() - cutAt).toBeLessThan(PEER_TIMEOUT * 1.5 + 250)

    const [againA, againB] = [alpha.mark(), beta.mark()]
    pair.link(true)
    await Promise.all([
      alpha.next({ event: 'up', peer: 'beta' }, 10_000, againA),
      beta.next({ event: 'up', peer: 'alpha' }, 10_000, againB),
    ])
  })
})
