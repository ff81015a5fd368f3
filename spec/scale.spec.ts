import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, expect, it } from 'vitest'
import { closeAll, ensureBuilt, makeNode } from './helpers.js'

beforeAll(ensureBuilt)
const FARM = fileURLToPath(new URL('./fixtures/farm.mjs', import.meta.url))
const PEER = fileURLToPath(new URL('./fixtures/peer.mjs', import.meta.url))
const children: ChildProcess[] = []
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  await closeAll()
})

async function firstLine(child: ChildProcess): Promise<string> {
  const lines = createInterface({ input: child.stdout! })
  const [line] = (await once(lines, 'line', { signal: AbortSignal.timeout(30_000) })) as [string]
  lines.close()
  return line
}

const FARM_SIZE = 1000

for (const side of ['dialled', 'dialling'] as const) {
  it(`with a thousand ${side} peers killed at once, calls to a live peer keep flowing: nothing waits out its timeout`, async () => {
    // Production timings (a busy 2-core machine is the test host): a 2 s ping, 6 s for a dead connection.
    const timings = { pingInterval: 2000, peerTimeout: 6000, reconnectMin: 100, reconnectMax: 5000, joinInterval: 1000 }
    // A thousand and one peers on one address: more than the default connection limits allow.
    const node = makeNode('hub', {
      ...timings,
      maxConnections: 2 * FARM_SIZE,
      maxConnectionsPerAddress: 2 * FARM_SIZE,
      maxPeers: 2 * FARM_SIZE,
    })
    const address = await node.listen('tcp://127.0.0.1:*')
    const farmArgs = side === 'dialling' ? [FARM, String(FARM_SIZE), 'test net', 'dial', address] : [FARM, String(FARM_SIZE), 'test net']
    const farm = spawn(process.execPath, farmArgs, { stdio: ['ignore', 'pipe', 'inherit'] })
    // The friend dials the hub: its answers reach the hub's ROUTER, the socket earlier releases stalled by polling it.
    const friend = spawn(process.execPath, [PEER, 'friend', 'hub', address], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, PEER_TIMINGS: JSON.stringify(timings) },
    })
    children.push(farm, friend)
    const [farmLine] = await Promise.all([firstLine(farm), firstLine(friend)])
    const names = Array.from({ length: FARM_SIZE }, (_, i) => `farm${i}`)
    if (side === 'dialled') (JSON.parse(farmLine) as string[]).forEach((a, i) => node.connect(names[i]!, a))
    await node.waitForPeers(['friend', ...names], { timeout: 30_000 })

    const codes = new Map<string, number>()
    const ok = () => codes.get('ok') ?? 0
    let stop = false
    let worst = 0
    /** Resolves once `n` more calls have succeeded (checked as results come in), or rejects after `ms`. */
    const waits = new Set<() => void>()
    const more = (n: number, ms: number) => {
      const target = ok() + n
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fewer than ${n} calls in ${ms} ms: ${JSON.stringify([...codes])}`)), ms)
        const check = () => {
          if (ok() < target) return
          clearTimeout(timer)
          waits.delete(check)
          resolve()
        }
        waits.add(check)
      })
    }
    const stream = async (): Promise<void> => {
      while (!stop) {
        const t0 = performance.now()
        const [r] = await node.call(['friend'], 'Arith.SumDiff', { A: 1, B: 2 }, { timeout: 1500 })
        worst = Math.max(worst, performance.now() - t0)
        const code = r!.ok ? 'ok' : r!.error.code
        codes.set(code, (codes.get(code) ?? 0) + 1)
        for (const check of [...waits]) check()
      }
    }
    const streams = Array.from({ length: 4 }, stream)
    let downs = 0
    const allDown = new Promise<void>((resolve, reject) => {
      setTimeout(() => reject(new Error(`only ${downs} of ${FARM_SIZE} peers found down`)), 20_000).unref()
      node.on('peer:down', (peer, reason) => {
        if (peer === 'friend') codes.set(`friend down ${reason}`, 1)
        else if (++downs === FARM_SIZE) resolve()
      })
    })
    // Calls flow; every farm peer is killed at once; calls go on while the hub finds them all gone, and after.
    await more(200, 10_000)
    farm.kill('SIGKILL')
    await Promise.all([allDown, more(200, 20_000)])
    await more(1000, 20_000)
    stop = true
    await Promise.all(streams)
    expect([...codes.keys()]).toEqual(['ok'])
    console.log(`${side}: calls to the live peer ${codes.get('ok')}, slowest ${worst.toFixed(0)} ms`)
  }, 60_000)
}
