import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'

const run = promisify(execFile)
const root = new URL('..', import.meta.url)
// Inside the package, so `import ... from 'bilateral'` resolves to this package's own exports.
const scratch = new URL('./.readme/', import.meta.url)
const blocks = [...readFileSync(new URL('README.md', root), 'utf8').matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!)

beforeAll(() => {
  ensureBuilt()
  mkdirSync(scratch, { recursive: true })
})
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

it('README has runnable examples', () => {
  expect(blocks.length).toBeGreaterThan(0)
})

blocks.forEach((code, i) => {
  it(`README example ${i + 1} runs as written`, async () => {
    const file = new URL(`example-${i}.mjs`, scratch)
    writeFileSync(file, code)
    const { stdout } = await run(process.execPath, [file.pathname], { timeout: 15_000 })
    expect(stdout.length).toBeGreaterThan(0)
  })
})
