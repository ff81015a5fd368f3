import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { isZ85Key, publicKeyOf } from '../lib/crypto.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const program = join(root, 'bin', 'bilateral-keygen.js')

beforeAll(() => {
  // `npm test` builds first; build here too when run on its own from a clean tree.
  // tsc still emits when some other module has type errors, so judge by the output.
  const built = join(root, 'dist', 'crypto.js')
  if (existsSync(built)) return
  try {
    execFileSync('npx', ['tsc', '-p', '.'], { cwd: root, stdio: 'inherit' })
  } catch (error) {
    if (!existsSync(built)) throw error
  }
}, 120_000)

let dir: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bilateral-keygen-'))
})
afterEach(() => {
  rmSync(dir, { recursive: true, force: true })
})

function keygen(...args: string[]) {
  const { status, stdout, stderr } = spawnSync(process.execPath, [program, ...args], { cwd: dir, encoding: 'utf8' })
  return { status, stdout, stderr }
}

/** The program failed with exit 2 and exactly one line on stderr. */
function expectUsageFailure(result: ReturnType<typeof keygen>) {
  expect(result.status).toBe(2)
  expect(result.stdout).toBe('')
  expect(result.stderr).toMatch(/^bilateral-keygen: [^\n]+\n$/)
}

const mode = (file: string) => statSync(file).mode & 0o777

describe('bilateral-keygen', () => {
  it('prints a new keypair as two lines by default', async () => {
    const { status, stdout, stderr } = keygen()
    expect(status).toBe(0)
    expect(stderr).toBe('')
    const match = /^public: (\S{40})\nsecret: (\S{40})\n$/.exec(stdout)
    expect(match, stdout).not.toBeNull()
    const [, publicKey, secretKey] = match!
    expect(isZ85Key(publicKey) && isZ85Key(secretKey)).toBe(true)
    expect(await publicKeyOf(secretKey!)).toBe(publicKey)
  })

  it('prints JSON with --json', async () => {
    const { status, stdout } = keygen('--json')
    expect(status).toBe(0)
    const parsed = JSON.parse(stdout) as { publicKey: string; secretKey: string }
    expect(Object.keys(parsed).sort()).toEqual(['publicKey', 'secretKey'])
    expect(await publicKeyOf(parsed.secretKey)).toBe(parsed.publicKey)
  })

  it('--out writes the secret key (0600) and FILE.pub (0644)', async () => {
    const file = join(dir, 'node.key')
    const { status, stdout } = keygen('--out', file)
    expect(status).toBe(0)
    const secretKey = readFileSync(file, 'utf8')
    const publicKey = readFileSync(`${file}.pub`, 'utf8')
    expect(secretKey).toMatch(/^\S{40}\n$/)
    expect(publicKey).toMatch(/^\S{40}\n$/)
    expect(await publicKeyOf(secretKey.trim())).toBe(publicKey.trim())
    expect(mode(file)).toBe(0o600)
    expect(mode(`${file}.pub`)).toBe(0o644)
    expect(stdout).toBe(`public: ${publicKey}`)
    expect(stdout).not.toContain(secretKey.trim())
  })

  it('--out refuses to overwrite either file without --force, and overwrites with it', () => {
    const file = join(dir, 'node.key')
    expect(keygen('--out', file).status).toBe(0)
    const before = [readFileSync(file, 'utf8'), readFileSync(`${file}.pub`, 'utf8')]

    expectUsageFailure(keygen('--out', file))
    expect([readFileSync(file, 'utf8'), readFileSync(`${file}.pub`, 'utf8')]).toEqual(before)

    // Only FILE.pub in the way: still refused, and FILE is not created.
    const other = join(dir, 'other.key')
    writeFileSync(`${other}.pub`, 'mine\n')
    expectUsageFailure(keygen('--out', other))
    expect(existsSync(other)).toBe(false)
    expect(readFileSync(`${other}.pub`, 'utf8')).toBe('mine\n')

    const forced = keygen('--out', file, '--force')
    expect(forced.status).toBe(0)
    expect(readFileSync(file, 'utf8')).not.toBe(before[0])
    expect(readFileSync(`${file}.pub`, 'utf8')).not.toBe(before[1])
    expect(mode(file)).toBe(0o600)
    expect(mode(`${file}.pub`)).toBe(0o644)
  })

  it('--force resets the modes of files it overwrites', () => {
    const file = join(dir, 'loose.key')
    writeFileSync(file, 'old\n', { mode: 0o666 })
    writeFileSync(`${file}.pub`, 'old\n', { mode: 0o600 })
    expect(keygen('--out', file, '--force').status).toBe(0)
    expect(mode(file)).toBe(0o600)
    expect(mode(`${file}.pub`)).toBe(0o644)
  })

  it('--public prints the public key of a stored secret key', async () => {
    const file = join(dir, 'node.key')
    keygen('--out', file)
    const publicKey = readFileSync(`${file}.pub`, 'utf8').trim()
    const { status, stdout, stderr } = keygen('--public', file)
    expect(status).toBe(0)
    expect(stderr).toBe('')
    expect(stdout).toBe(`${publicKey}\n`)
    expect(JSON.parse(keygen('--public', file, '--json').stdout)).toEqual({ publicKey })
    expect(await publicKeyOf(readFileSync(file, 'utf8').trim())).toBe(publicKey)
  })

  it('--public refuses a .pub file (a public key, whose "public key" would be a wrong one) and names the secret key file', () => {
    const file = join(dir, 'node.key')
    keygen('--out', file)
    const result = keygen('--public', `${file}.pub`)
    expectUsageFailure(result)
    expect(result.stderr).toContain(`give the secret key file (${file})`)
  })

  it('--public fails with exit 2 for a missing or malformed key file', () => {
    expectUsageFailure(keygen('--public', join(dir, 'missing.key')))
    const junk = join(dir, 'junk.key')
    writeFileSync(junk, 'not a key\n')
    expectUsageFailure(keygen('--public', junk))
    expectUsageFailure(keygen('--public', dir))
  })

  it('--help prints usage and exits 0', () => {
    for (const flag of ['--help', '-h']) {
      const { status, stdout, stderr } = keygen(flag)
      expect(status).toBe(0)
      expect(stderr).toBe('')
      expect(stdout).toMatch(/^Usage: bilateral-keygen/)
      expect(stdout).toContain('--out FILE')
      expect(stdout).toContain('--public FILE')
    }
  })

  it.each([
    ['an unknown flag', ['--bogus']],
    ['a stray positional argument', ['stray']],
    ['--public with --out', ['--public', 'a.key', '--out', 'b.key']],
    ['--out without a value', ['--out']],
    ['--force without --out', ['--force']],
    ['a value on a boolean flag', ['--json=yes']],
  ])('bad usage (%s) exits 2 with one line on stderr', (_, args) => {
    expectUsageFailure(keygen(...args))
  })
})
