import { createServer, type Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { generateKeypair, type BilateralError } from '../lib/index.js'
import { closeAll, deferred, makeNode } from './helpers.js'

const servers: Server[] = []
afterEach(async () => {
  await closeAll()
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve))
})

/** Collect `peer:refused` errors of `node` until `n` have come, or `ms` have passed. */
function refusals(node: ReturnType<typeof makeNode>, n: number, ms: number): Promise<BilateralError[]> {
  const seen: BilateralError[] = []
  const done = deferred<BilateralError[]>()
  const timer = setTimeout(() => done.resolve(seen), ms)
  node.on('peer:refused', (_, error) => {
    seen.push(error)
    if (seen.length >= n) {
      clearTimeout(timer)
      done.resolve(seen)
    }
  })
  return done.promise
}

// FAST back-off: 20 ms doubling to 300 ms, with jitter in [½, 1] of each step. In 2 s that is at most
// 20 + 40 + 80 + 160 + 300 × 5 ≈ 1.8 s of waits, about 10 attempts; a retry every 20 ms would be 100.
const WINDOW = 2000
const MOST_ATTEMPTS = 20

describe('handshake failures back off', () => {
  it('dialling something that is not ZeroMQ (an HTTP server) backs off exponentially and says what happened', async () => {
    let connections = 0
    const http = createServer((_, res) => res.end('hello'))
    http.on('connection', () => connections++)
    servers.push(http)
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    const port = (http.address() as { port: number }).port
    const node = makeNode('dialler')
    const seen = refusals(node, 1000, WINDOW)
    node.connect('web', `tcp://127.0.0.1:${port}`)
    const errors = await seen
    expect(connections).toBeGreaterThan(2)
    expect(connections).toBeLessThan(MOST_ATTEMPTS)
    expect(errors.length).toBeGreaterThan(0)
    expect(errors[0]!.code).toBe('HANDSHAKE')
    expect(errors[0]!.message).toMatch(/not a ZeroMQ endpoint/)
  })

  it('dialling a listener whose key changed (a stale key) backs off exponentially and says so', async () => {
    const [kd, stale, actual] = await Promise.all([generateKeypair(), generateKeypair(), generateKeypair()])
    const listener = makeNode(actual.publicKey, { keypair: actual })
    const endpoint = await listener.listen('tcp://127.0.0.1:*')
    const dialler = makeNode(kd.publicKey, { keypair: kd })
    const seen = refusals(dialler, 1000, WINDOW)
    dialler.connect(stale.publicKey, endpoint)
    const errors = await seen
    expect(errors.length).toBeGreaterThan(2)
    expect(errors.length).toBeLessThan(MOST_ATTEMPTS)
    for (const e of errors) expect(e.code).toBe('HANDSHAKE')
    expect(errors[0]!.message).toMatch(/does not hold the key dialled/)
  })

  it('a plaintext node dialling an encrypted one is told that one side is encrypted, and backs off', async () => {
    const kl = await generateKeypair()
    const listener = makeNode(kl.publicKey, { keypair: kl })
    const endpoint = await listener.listen('tcp://127.0.0.1:*')
    const dialler = makeNode('plain')
    const seen = refusals(dialler, 1000, WINDOW)
    dialler.connect(kl.publicKey, endpoint)
    const errors = await seen
    expect(errors.length).toBeGreaterThan(2)
    expect(errors.length).toBeLessThan(MOST_ATTEMPTS)
    expect(errors[0]!.message).toMatch(/one side is encrypted and the other is not/)
  })

  it('waitForPeers names, for a peer that never came up, why its last attempt failed', async () => {
    const node = makeNode('dialler')
    node.connect('nobody', 'tcp://127.0.0.1:1')
    await expect(node.waitForPeers(['nobody'], { timeout: 300 })).rejects.toMatchObject({
      code: 'TIMEOUT',
      message: expect.stringMatching(/nobody \(no connection at tcp:\/\/127\.0\.0\.1:1 yet \(retrying\)\)/),
    })
  })
})
