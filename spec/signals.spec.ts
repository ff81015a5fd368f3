// Signals arriving while a node dials. libzmq's connect and disconnect read
// the socket's mailbox first, and a signal then (a child process's SIGCHLD,
// a profiler's SIGPROF) fails them with EINTR; zeromq.js does not try those
// two again. A node must: a user's connect() failed SOCKET "Interrupted
// system call", and that peer was never dialled. Here the signals are the
// profiler's, every 20 µs, in a process of its own.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/signalled.mjs', import.meta.url))

describe('signals', () => {
  it('a mesh of 60 nodes forms whole in a process signalled every 20 µs: no connect() fails EINTR', async () => {
    ensureBuilt()
    const dir = mkdtempSync(join(tmpdir(), 'bilateral-signals-'))
    try {
      const args = ['--cpu-prof', '--cpu-prof-interval', '20', '--cpu-prof-dir', dir, FIXTURE, '60']
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      const code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(signal ?? c)))
      expect(code).toBe(0)
      const result = JSON.parse(out) as { failures: string[]; failed: number; links: number; allUp: boolean }
      expect(result.failures).toEqual([])
      expect(result.failed).toBe(0)
      expect(result.links).toBe((60 * 59) / 2)
      expect(result.allUp).toBe(true)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
