import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import * as zmq from 'zeromq'
import { afterEach, beforeAll, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'

beforeAll(ensureBuilt)
const FIXTURE = fileURLToPath(new URL('./fixtures/fds.mjs', import.meta.url))
const sockets: zmq.Router[] = []
afterEach(() => {
  for (const s of sockets.splice(0)) s.close()
})

it.skipIf(process.platform !== 'linux')(
  'dials stop with SOCKET before the fd limit, the process keeps a reserve of descriptors, and disconnect() and close() give every one back',
  async () => {
    // A listener that accepts every dial and never answers: each dial holds its connection.
    const listener = new zmq.Router({ linger: 0 })
    sockets.push(listener)
    listener.bindSync('tcp://127.0.0.1:*')
    const child = spawn('sh', ['-c', `ulimit -n 512 && exec "${process.execPath}" "${FIXTURE}" "${listener.lastEndpoint}"`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()))
    const [code] = (await once(child, 'exit', { signal: AbortSignal.timeout(30_000) })) as [number]
    expect(code).toBe(0)
    const report = JSON.parse(out) as {
      baseline: number
      dials: number
      error?: { code: string; message: string }
      atLimit: number
      filesOpened: number
      afterDisconnect: number
      afterClose: number
    }
    expect(report.error).toMatchObject({ code: 'SOCKET', message: expect.stringMatching(/file descriptors/) })
    expect(report.dials).toBeGreaterThan(50)
    // 5% of 512, at least 32, stays free.
    expect(report.atLimit).toBeLessThanOrEqual(512 - 32)
    expect(report.filesOpened).toBe(16)
    expect(report.afterDisconnect).toBeLessThanOrEqual(report.baseline + 2)
    expect(report.afterClose).toBeLessThanOrEqual(report.baseline)
  },
)

it.skipIf(process.platform !== 'linux')(
  'dials that never connect stop at the descriptor budget too, not at a full libzmq context',
  async () => {
    // Nothing listens on port 1: each dial holds its sockets but no connection (three descriptors, not four).
    const child = spawn('sh', ['-c', `ulimit -n 1024 && exec "${process.execPath}" "${FIXTURE}" tcp://127.0.0.1:1`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()))
    const [code] = (await once(child, 'exit', { signal: AbortSignal.timeout(30_000) })) as [number]
    expect(code).toBe(0)
    const report = JSON.parse(out) as { dials: number; error?: { code: string; message: string }; afterClose: number; baseline: number }
    // The budget's refusal, not libzmq's EMFILE from a context whose socket table is full.
    expect(report.error).toMatchObject({ code: 'SOCKET', message: expect.stringMatching(/too few file descriptors left/) })
    expect(report.dials).toBeGreaterThan(200)
    expect(report.afterClose).toBeLessThanOrEqual(report.baseline)
  },
)
