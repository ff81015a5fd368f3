import { execFile, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ensureBuilt } from './helpers.js'

const run = promisify(execFile)
const root = new URL('..', import.meta.url)
// Inside the package, so `import ... from 'bilateral'` resolves to this package's own exports.
const scratch = new URL('./.readme/', import.meta.url)
/** Runnable examples: every `js` block, and every `ts` block that is a program (it imports), as opposed to a signature. */
const blocks = [...readFileSync(new URL('README.md', root), 'utf8').matchAll(/```(js|ts)\n([\s\S]*?)```/g)]
  .map((m) => ({ lang: m[1] as 'js' | 'ts', code: m[2]! }))
  .filter((b) => b.lang === 'js' || b.code.startsWith('import '))

beforeAll(() => {
  ensureBuilt()
  mkdirSync(scratch, { recursive: true })
})
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** What each example's comments promise it prints, in order of appearance in README. */
const promised: string[][] = [
  ['350 -150 alpha', 'NO_SUCH_METHOD'],
  ["from: 'beta'", 'S: 350', 'D: -150', "caller: 'alpha'", "from: 'gamma'", 'NOT_CONNECTED'],
  ["[ 'k@r1', 'k@r2', 'CANCELLED' ]", 'r3 stopped: CANCELLED', 'first answer x@r1', 'CANCELLED\n'],
  ['select 7 for api, trace 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, within the second: true'],
  ['Public.Rate 0.05', 'Account.Balance 10', 'Account.Withdraw NO_SUCH_METHOD'],
  ["beta { '$node': [ 'Ping', 'Info', 'Health' ], Public: [ 'Rate' ] }"],
  ['bilateral_calls_total{direction="in",method="Arith.SumDiff",outcome="OK"} 1'],
  ["NETWORK_MISMATCH\n[ 'peer refused gamma NETWORK_MISMATCH' ]"],
  ['m0 self, m1 up, m2 up, m3 up, m4 up', 'm4 left'],
  ["[ 'i1', 'i2' ]", 'true', '[]'],
  ['ok: true', 'hello '],
  ['true\ntrue'],
]

it('every README example has its promised output listed here', () => {
  expect(blocks).toHaveLength(promised.length)
})

blocks.forEach(({ lang, code }, i) => {
  it(`README example ${i + 1} (${lang}) ${lang === 'ts' ? 'compiles under --strict, ' : ''}runs as written and prints what its comments say`, async () => {
    let file = new URL(`example-${i}.mjs`, scratch)
    if (lang === 'ts') {
      // Inside the package, `bilateral` resolves to this package's own exports and types, as it would for a user.
      const source = new URL(`example-${i}.ts`, scratch)
      writeFileSync(source, code)
      const tsc = fileURLToPath(new URL('node_modules/typescript/bin/tsc', root))
      const flags = [
        '--strict',
        '--noUncheckedIndexedAccess',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--target',
        'es2022',
        '--types',
        'node',
      ]
      await run(
        process.execPath,
        [tsc, ...flags, '--skipLibCheck', '--rootDir', fileURLToPath(scratch), '--outDir', fileURLToPath(scratch), fileURLToPath(source)],
        {
          timeout: 60_000,
        },
      )
      file = new URL(`example-${i}.js`, scratch)
    } else writeFileSync(file, code)
    // Examples that read key files run after the README's own keygen command, in their own directory.
    const cwd = fileURLToPath(new URL(`./dir-${i}/`, scratch))
    mkdirSync(cwd, { recursive: true })
    if (code.includes('server.key')) {
      await run(process.execPath, [fileURLToPath(new URL('bin/bilateral-keygen.js', root)), '--out', 'server.key'], { cwd })
    }
    const stdout = await runExample(file.pathname, cwd)
    for (const text of promised[i] ?? []) expect(stdout).toContain(text)
    // Room for a compile, and for a hung example's report (runExample).
  }, 60_000)
})

/**
 * Run an example; resolve with its stdout once it exits 0. One that has not
 * exited within 15 s is asked for a diagnostic report (Node's
 * `--report-on-signal`) before it is killed, so the failure says what kept it
 * alive: the JavaScript stack, and the handles still open and referenced.
 * A failure shows the exit code or signal, stdout and stderr.
 */
function runExample(file: string, cwd: string): Promise<string> {
  const flags = ['--report-on-signal', '--report-signal=SIGUSR2', `--report-directory=${cwd}`, '--report-compact']
  const child = spawn(process.execPath, [...flags, file], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  let hung = false
  const reportDue = setTimeout(() => {
    hung = true
    child.kill('SIGUSR2')
  }, 15_000)
  // Killed 3 s after the report was asked for, however far it got.
  const killDue = setTimeout(() => child.kill('SIGKILL'), 18_000)
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      clearTimeout(reportDue)
      clearTimeout(killDue)
      if (code === 0 && !hung) return resolve(stdout)
      const how = hung ? 'had not exited after 15 s' : `exited with ${signal ?? `code ${code}`}`
      reject(new Error(`${file} ${how}\n--- stdout\n${stdout}\n--- stderr\n${stderr}${hung ? `\n--- report\n${report(cwd)}` : ''}`))
    })
  })
}

/** What a diagnostic report in `dir` says kept the process alive. */
function report(dir: string): string {
  const name = readdirSync(dir).find((f) => f.startsWith('report.') && f.endsWith('.json'))
  if (name === undefined) return '(no report was written)'
  try {
    const r = JSON.parse(readFileSync(join(dir, name), 'utf8')) as {
      javascriptStack?: { message?: string; stack?: string[] }
      libuv?: { type: string; is_active?: boolean; is_referenced?: boolean; [k: string]: unknown }[]
    }
    const handles = (r.libuv ?? []).filter((h) => h.is_active === true && h.is_referenced === true)
    return [
      `stack: ${r.javascriptStack?.message ?? ''}`,
      ...(r.javascriptStack?.stack ?? []).slice(0, 10),
      'active, referenced handles:',
      ...handles.map((h) => JSON.stringify(h)),
    ].join('\n')
  } catch (error) {
    return `(report unreadable: ${(error as Error).message})`
  }
}
