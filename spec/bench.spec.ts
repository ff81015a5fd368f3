import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { beforeAll, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'

const run = promisify(execFile)
beforeAll(ensureBuilt)

// Not a timed test: it only proves the benchmark still runs and reports every scenario.
it('the benchmark runs in tiny mode and reports every scenario against its floor', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bilateral-bench-'))
  try {
    const out = join(dir, 'results.json')
    const script = new URL('../bench/run.mjs', import.meta.url).pathname
    const { stdout } = await run(process.execPath, [script, '--tiny', '--out', out], { timeout: 60_000 })
    const { rows } = JSON.parse(readFileSync(out, 'utf8')) as {
      rows: { scenario: string; unit: string; bilateral: number; floor?: number }[]
    }
    const scenarios = new Set(rows.map((r) => r.scenario.replace(/ \(.*?\)/, '')))
    for (const expected of [
      'call, dialler → listener, sequential',
      'call, listener → dialler, 100 in flight',
      'cast, delivered to the handler',
      'payload 1024 KiB echo, 8 in flight',
      'multicast to 3, sequential',
      'multicast to 10, 100 in flight',
      'mesh of 6 nodes, full convergence',
      'request to one of 3 members picked by selector, 100 in flight',
      '6 members, one seed each: every member sees every other up',
    ]) {
      expect(scenarios, expected).toContain(expected)
    }
    // Every figure is a number. Times and rates are positive; a memory delta is not: a
    // collection between the two samples of a tiny run can make it negative; and a count
    // of rounds within a target is a whole number from none to all of them.
    for (const r of rows) {
      expect(Number.isFinite(r.bilateral), r.scenario).toBe(true)
      if (r.unit === 'rounds') expect(Number.isInteger(r.bilateral) && r.bilateral >= 0, r.scenario).toBe(true)
      else if (r.unit !== 'KiB') expect(r.bilateral, r.scenario).toBeGreaterThan(0)
    }
    expect(
      rows.some((r) => r.unit === 'rounds'),
      'a count of rounds within the 3 s target',
    ).toBe(true)
    expect(stdout).toContain('vs floor')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 90_000)
