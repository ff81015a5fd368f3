import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
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

/** What each example's comments promise it prints, in order of appearance in README. */
const promised: string[][] = [
  ["from: 'beta'", 'S: 350', 'D: -150', "caller: 'alpha'", "from: 'gamma'", 'NOT_CONNECTED'],
  ['Public.Rate 0.05', 'Account.Balance 10', 'Account.Withdraw NO_SUCH_METHOD'],
  ['ok: true', 'hello '],
  ['true\ntrue'],
]

it('every README example has its promised output listed here', () => {
  expect(blocks).toHaveLength(promised.length)
})

blocks.forEach((code, i) => {
  it(`README example ${i + 1} runs as written and prints what its comments say`, async () => {
    const file = new URL(`example-${i}.mjs`, scratch)
    writeFileSync(file, code)
    // Examples that read key files run after the README's own keygen command, in their own directory.
    const cwd = fileURLToPath(new URL(`./dir-${i}/`, scratch))
    mkdirSync(cwd, { recursive: true })
    if (code.includes('server.key')) {
      await run(process.execPath, [fileURLToPath(new URL('bin/bilateral-keygen.js', root)), '--out', 'server.key'], { cwd })
    }
    const { stdout } = await run(process.execPath, [file.pathname], { timeout: 15_000, cwd })
    for (const text of promised[i] ?? []) expect(stdout).toContain(text)
  })
})
