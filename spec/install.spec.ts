// The package installed three ways into a scratch project, as a user would,
// offline and from this repository itself: a tarball from `npm pack` in a
// fresh clone, `npm i <path to a fresh clone>`, and `npm i <git URL>`. Each
// runs an ES module, a CommonJS and a strict TypeScript consumer, and the
// keygen bin. Installs the committed HEAD (a clone); uncommitted changes are
// not in it.
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CONSUMERS = join(ROOT, 'spec', 'fixtures', 'consumers')
const NPM = ['--offline', '--no-audit', '--no-fund', '--loglevel=error']
const MINUTE = 60_000

let work: string
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'bilateral-install-'))
})
afterAll(() => rmSync(work, { recursive: true, force: true }))

async function freshClone(name: string): Promise<string> {
  const dir = join(work, name)
  await run('git', ['clone', '-q', ROOT, dir])
  return dir
}

/**
 * A scratch project whose lockfile already holds the package's own
 * dependencies, at the versions this repository locks: npm then needs no
 * registry to place them (offline), only its cache, which `npm ci` filled.
 */
function scratch(name: string): string {
  const dir = join(work, name)
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version: string; dev?: boolean }>
  }
  const own = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }
  const dependencies = Object.fromEntries(Object.keys(own.dependencies).map((n) => [n, lock.packages[`node_modules/${n}`]!.version]))
  const manifest = { name: 'scratch', version: '1.0.0', private: true, type: 'module', dependencies }
  const packages: Record<string, unknown> = { '': { name: 'scratch', version: '1.0.0', dependencies } }
  for (const [path, entry] of Object.entries(lock.packages))
    if (path.startsWith('node_modules/') && entry.dev !== true) packages[path] = entry
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2))
  writeFileSync(
    join(dir, 'package-lock.json'),
    JSON.stringify({ name: 'scratch', version: '1.0.0', lockfileVersion: 3, requires: true, packages }),
  )
  return dir
}

/** Install `spec` into a scratch project and run the three consumers and the bin there. */
async function installAndUse(name: string, spec: string): Promise<void> {
  const dir = scratch(name)
  await run('npm', ['install', ...NPM, spec], { cwd: dir, timeout: 3 * MINUTE })
  for (const file of ['esm.mjs', 'cjs.cjs', 'typed.ts']) copyFileSync(join(CONSUMERS, file), join(dir, file))
  const node = (file: string) => run(process.execPath, [file], { cwd: dir, timeout: MINUTE }).then((r) => JSON.parse(r.stdout) as unknown)
  expect(await node('esm.mjs')).toEqual({ Sum: 8, Diff: 2 })
  expect(await node('cjs.cjs')).toBe('sealed')
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const flags = ['--strict', '--noUncheckedIndexedAccess', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022']
  await run(process.execPath, [tsc, ...flags, '--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', 'typed.ts'], {
    cwd: dir,
    timeout: MINUTE,
  })
  expect(await node('typed.js')).toEqual({ Sum: 8, Diff: 2, remote: false, code: 'NO_SUCH_METHOD' })
  const keygen = await run(join(dir, 'node_modules', '.bin', 'bilateral-keygen'), ['--json'], { cwd: dir, timeout: MINUTE })
  expect(Object.keys(JSON.parse(keygen.stdout) as object).sort()).toEqual(['publicKey', 'secretKey'])
}

describe('installing the package', () => {
  it(
    'npm pack in a fresh clone builds and ships dist, the keygen bin and LICENSE, with map sources inlined, and no demo or TypeScript sources',
    { timeout: 5 * MINUTE },
    async () => {
      const clone = await freshClone('packed')
      const { stdout } = await run('npm', ['pack', ...NPM, '--json'], { cwd: clone, timeout: 3 * MINUTE })
      const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[]
      const files = packed!.files.map((f) => f.path)
      expect(files).toEqual(
        expect.arrayContaining(['dist/index.js', 'dist/index.cjs', 'dist/index.d.ts', 'bin/bilateral-keygen.js', 'LICENSE', 'README.md']),
      )
      expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([])
      expect(files).not.toContain('bin/bilateral-demo.js')
      const map = JSON.parse(readFileSync(join(clone, 'dist', 'node.js.map'), 'utf8')) as { sources: string[]; sourcesContent?: string[] }
      expect(map.sourcesContent?.length).toBe(map.sources.length)
      await installAndUse('from-tarball', join(clone, packed!.filename))
    },
  )

  it('npm i <path to a fresh clone> builds it (npm runs its prepare) and imports', { timeout: 5 * MINUTE }, async () => {
    await installAndUse('from-path', await freshClone('linked'))
  })

  it('npm i <git URL> of the repository installs a built package', { timeout: 5 * MINUTE }, async () => {
    await installAndUse('from-git', `git+file://${ROOT}`)
  })
})
