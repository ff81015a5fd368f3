// The bilateral command end to end: `bilateral serve` in a child process,
// every other subcommand run against it as a user would, exit codes and
// --json output checked.
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBuilt, within } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CLI = join(ROOT, 'bin', 'bilateral.js')
const SERVICE = join(ROOT, 'spec', 'fixtures', 'cli-service.mjs')
const children: ChildProcess[] = []
let dir: string

interface Ran {
  code: number
  stdout: string
  stderr: string
}

/** Run `bilateral ...args`; resolves with its exit code and output, whatever the code. */
function bilateral(...args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1
      resolve({ code, stdout, stderr })
    })
  })
}

/** `bilateral serve` in a child; resolves with the endpoint it listens on. */
async function serve(...args: string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'serve', SERVICE, '--listen', 'tcp://127.0.0.1:*', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.push(child)
  const line = await within(
    new Promise<string>((resolve) => createInterface({ input: child.stdout! }).on('line', (l) => l.startsWith('listening ') && resolve(l))),
    10_000,
    'bilateral serve',
  )
  return line.slice('listening '.length)
}

let plain: string
let open: string

beforeAll(async () => {
  ensureBuilt()
  dir = mkdtempSync(join(tmpdir(), 'bilateral-cli-'))
  ;[plain, open] = await Promise.all([
    serve('--network', 'cli', '--name', 'svc'),
    serve('--network', 'cli', '--name', 'ops', '--introspect'),
  ])
}, 30_000)

afterAll(() => {
  for (const child of children) child.kill('SIGTERM')
  rmSync(dir, { recursive: true, force: true })
})

describe('bilateral call and cast', () => {
  it('call prints the result and exits 0; a failed call prints its code and exits 1; --json is parseable', async () => {
    const ok = await bilateral('call', `svc@${plain}`, 'Arith.SumDiff', '{"A":5,"B":3}', '--network', 'cli')
    expect(ok).toMatchObject({ code: 0, stdout: 'svc\tok\t{"Sum":8,"Diff":2}\n' })
    const failed = await bilateral('call', `svc@${plain}`, 'Arith.Fail', '--network', 'cli', '--json')
    expect(failed.code).toBe(1)
    expect(JSON.parse(failed.stdout)).toEqual([
      { from: 'svc', ok: false, error: { code: 'REMOTE', message: 'Error: nope', remoteCode: 'E_NOPE' } },
    ])
    const missing = await bilateral('call', `svc@${plain}`, 'Arith.Nope', '--network', 'cli')
    expect(missing.code).toBe(1)
    expect(missing.stdout).toMatch(/^svc\tNO_SUCH_METHOD\t/)
  })

  it('a plaintext peer may be given by its address alone: the node there says its name', async () => {
    const ok = await bilateral('call', plain, 'Arith.SumDiff', '{"A":5,"B":3}', '--network', 'cli')
    expect(ok).toMatchObject({ code: 0, stdout: 'svc\tok\t{"Sum":8,"Diff":2}\n' })
    const nobody = await bilateral('call', 'tcp://127.0.0.1:1', 'A.B', '--network', 'cli', '--timeout', '300')
    expect(nobody.code).toBe(1)
    expect(nobody.stderr).toMatch(
      /^bilateral: cannot reach tcp:\/\/127\.0\.0\.1:1: no node answered at tcp:\/\/127\.0\.0\.1:1 after 300 ms \(.+\)\n$/,
    )
    const wrong = await bilateral('call', plain, 'Arith.SumDiff', '{}', '--network', 'other')
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/NETWORK_MISMATCH/)
    // A served node redials its peers by name, so it needs one.
    const serve = await bilateral('serve', 'x.mjs', '--connect', plain, '--network', 'cli')
    expect(serve.code).toBe(2)
    expect(serve.stderr).toMatch(/^bilateral: --connect takes NAME@ADDRESS/)
  })

  it('an unreachable or refusing peer exits 1 saying why, in one line', async () => {
    const wrong = await bilateral('call', `svc@${plain}`, 'Arith.SumDiff', '{}', '--network', 'other')
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/^bilateral: cannot reach svc@tcp:\/\/127\.0\.0\.1:\d+: .*NETWORK_MISMATCH.*\n$/)
    const nobody = await bilateral('call', 'x@tcp://127.0.0.1:1', 'A.B', '--network', 'cli', '--timeout', '300')
    expect(nobody.code).toBe(1)
    expect(nobody.stderr.split('\n').filter(Boolean)).toHaveLength(1)
  })

  it('cast sends and says to whom', async () => {
    expect(await bilateral('cast', `svc@${plain}`, 'Clock.Now', '--network', 'cli')).toMatchObject({ code: 0, stdout: 'sent to svc\n' })
  })
})

describe('bilateral serve in a mesh that forms itself', () => {
  it('--mesh makes the first member, --seed joins through it, and each served node links to every other', async () => {
    const first = await serve('--network', 'cli-mesh', '--name', 'm1', '--mesh')
    const [, third] = await Promise.all([
      serve('--network', 'cli-mesh', '--name', 'm2', '--seed', first),
      serve('--network', 'cli-mesh', '--name', 'm3', '--seed', first, '--introspect'),
    ])
    // m3 hears of m2 only through m1's gossip: ask m3 whom it is linked to, at most 20 times.
    let up: string[] = []
    for (let attempt = 0; attempt < 20 && up.length < 3; attempt++) {
      const ran = await bilateral('peers', `m3@${third}`, '--network', 'cli-mesh', '--json')
      up =
        ran.code === 0
          ? (JSON.parse(ran.stdout) as { name: string; state: string }[]).filter((p) => p.state === 'up').map((p) => p.name)
          : []
    }
    // Its peers: m1, m2, and the command's own short-lived node.
    expect(up.filter((n) => !n.startsWith('bilateral-cli-')).sort()).toEqual(['m1', 'm2'])
    const bad = await bilateral('serve', SERVICE, '--seed', 'm1', '--network', 'cli-mesh')
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/^bilateral: --seed takes an ADDRESS/)
  })
})

describe('bilateral ping, methods, peers, stats', () => {
  it('ping times round trips', async () => {
    const ran = await bilateral('ping', `svc@${plain}`, '--network', 'cli', '--count', '2', '--json')
    expect(ran.code).toBe(0)
    const { peer, ms } = JSON.parse(ran.stdout) as { peer: string; ms: number[] }
    expect(peer).toBe('svc')
    expect(ms).toHaveLength(2)
    expect(ms.every((t) => t > 0 && t < 10_000)).toBe(true)
  })

  it('methods lists what the peer lets us call', async () => {
    const ran = await bilateral('methods', `svc@${plain}`, '--network', 'cli')
    expect(ran.code).toBe(0)
    expect(ran.stdout.trim().split('\n')).toEqual(['$node.Ping', '$node.Info', '$node.Health', 'Arith.SumDiff', 'Arith.Fail', 'Clock.Now'])
  })

  it('peers and stats work where the node serves them, and say why not where it does not', async () => {
    const peers = await bilateral('peers', `ops@${open}`, '--network', 'cli', '--json', '--name', 'asker')
    expect(peers.code).toBe(0)
    expect(JSON.parse(peers.stdout)).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'asker', state: 'up', direction: 'inbound' })]),
    )
    const stats = await bilateral('stats', `ops@${open}`, '--network', 'cli', '--json')
    expect(stats.code).toBe(0)
    expect(JSON.parse(stats.stdout)).toMatchObject({ pending: 0 })
    const refused = await bilateral('peers', `svc@${plain}`, '--network', 'cli')
    expect(refused.code).toBe(1)
    expect(refused.stderr).toBe(
      `bilateral: svc@${plain}: NO_SUCH_METHOD: it does not serve $node.Peers to us (see its introspection option)\n`,
    )
  })
})

describe('bilateral watch and bench', () => {
  it("watch prints each change in the peer's peers as it happens", async () => {
    const args = ['watch', `ops@${open}`, '--network', 'cli', '--json', '--interval', '50', '--for', '3000', '--name', 'watcher']
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(child)
    let stdout = ''
    const first = new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => ((stdout += d), resolve())))
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)))
    // Once it has printed what it sees, a peer comes and goes while it watches.
    await within(first, 10_000, 'the first line of watch')
    await bilateral('ping', `ops@${open}`, '--network', 'cli', '--name', 'visitor', '--count', '1')
    const ran = { code: await within(exited, 10_000, 'watch to end'), stdout }
    expect(ran.code).toBe(0)
    const events = ran.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { peer: string; state: string; code?: string })
    expect(events).toEqual(expect.arrayContaining([expect.objectContaining({ peer: 'watcher', state: 'up' })]))
    // It may come and go between two reads: then only its going is seen; if its coming is, it is first.
    const visitor = events.filter((e) => e.peer === 'visitor').map((e) => e.state)
    expect(visitor.at(-1)).toBe('down')
    expect(visitor.filter((state) => state !== 'up' && state !== 'down')).toEqual([])
    if (visitor.length > 1) expect(visitor[0]).toBe('up')
  })

  it('bench prints the rate and latency of a method, and exits 1 if calls failed', async () => {
    const ran = await bilateral(
      'bench',
      `svc@${plain}`,
      'Arith.SumDiff',
      '{"A":1,"B":2}',
      '--network',
      'cli',
      '--count',
      '200',
      '--concurrency',
      '20',
      '--json',
    )
    expect(ran.code).toBe(0)
    const report = JSON.parse(ran.stdout) as { calls: number; perSecond: number; p50Ms: number; p99Ms: number; failed: object }
    expect(report).toMatchObject({ calls: 200, concurrency: 20, failed: {} })
    expect(report.perSecond).toBeGreaterThan(0)
    expect(report.p99Ms).toBeGreaterThanOrEqual(report.p50Ms)
    const failing = await bilateral('bench', `svc@${plain}`, 'Arith.Fail', '--network', 'cli', '--count', '10', '--json')
    expect(failing.code).toBe(1)
    expect(JSON.parse(failing.stdout)).toMatchObject({ failed: { REMOTE: 10 } })
  })
})

describe('usage', () => {
  it.each(['call', 'cast', 'ping', 'methods', 'peers', 'stats', 'watch', 'bench', 'serve'])(
    'bilateral %s --help prints its usage and exits 0',
    async (command) => {
      const ran = await bilateral(command, '--help')
      expect(ran.code).toBe(0)
      expect(ran.stdout).toMatch(new RegExp(`^Usage: bilateral ${command} `))
    },
  )

  it.each([
    [['frob'], 'unknown command "frob"'],
    [['call', 'svc@tcp://127.0.0.1:1', 'A.B'], '--network NAME is required'],
    [['call', 'svc', 'A.B', '--network', 'n'], 'peer "svc" must be NAME@ADDRESS'],
    [['call', 'svc@tcp://127.0.0.1:1', 'A.B', '{nope', '--network', 'n'], 'the arguments must be JSON'],
    [['call', 'svc@tcp://127.0.0.1:1', 'A.B', '--network', 'n', '--bogus'], "Unknown option '--bogus'"],
    [['ping', 'svc@tcp://127.0.0.1:1', '--network', 'n', '--timeout', 'soon'], '--timeout takes a number of ms'],
  ])('bad usage %j exits 2 with one line on stderr', async (args, message) => {
    const ran = await bilateral(...args)
    expect(ran.code).toBe(2)
    expect(ran.stderr.split('\n').filter(Boolean)).toHaveLength(1)
    expect(ran.stderr).toContain(message)
    expect(ran.stdout).toBe('')
  })

  it('bilateral with no command prints the commands', async () => {
    const ran = await bilateral()
    expect(ran.code).toBe(0)
    expect(ran.stdout).toContain('keygen')
  })
})

describe('encrypted', () => {
  it('keygen makes keys; serve and call join encrypted, the peer named by @FILE of its public key', async () => {
    const server = join(dir, 'server.key')
    const client = join(dir, 'client.key')
    expect((await bilateral('keygen', '--out', server)).code).toBe(0)
    expect((await bilateral('keygen', '--out', client)).code).toBe(0)
    const endpoint = await serve('--network', 'sealed', '--key', server)
    const ran = await bilateral(
      'call',
      `@${server}.pub@${endpoint}`,
      'Arith.SumDiff',
      '{"A":1,"B":1}',
      '--network',
      'sealed',
      '--key',
      client,
    )
    expect(ran.code).toBe(0)
    expect(ran.stdout).toMatch(/\tok\t\{"Sum":2,"Diff":0\}\n$/)
    // Without our key, a plaintext dial to an encrypted node fails in the handshake, and says so.
    const bare = await bilateral('call', `@${server}.pub@${endpoint}`, 'Arith.SumDiff', '{}', '--network', 'sealed', '--timeout', '2000')
    expect(bare.code).toBe(1)
    expect(bare.stderr).toContain('cannot reach')
  })
})

const canNetns = process.platform === 'linux' && process.getuid?.() === 0 && spawnSync('ip', ['netns', 'list']).status === 0

// README's commands name port 7000: they run in a network namespace of their own, whose loopback nothing else uses.
describe.skipIf(!canNetns)("README's Operating section", () => {
  it('runs as written and prints what its comments say', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('## Operating'), readme.indexOf('## Reliability'))
    const script = /```sh\n([\s\S]*?)```/.exec(section)![1]!
    const work = mkdtempSync(join(tmpdir(), 'bilateral-operating-'))
    // `bilateral` on the PATH, as npm links it for an installed package.
    mkdirSync(join(work, 'bin'))
    writeFileSync(join(work, 'bin', 'bilateral'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 })
    writeFileSync(join(work, 'script.sh'), script)
    const space = `bilateral-op-${process.pid}`
    execFileSync('ip', ['netns', 'add', space])
    try {
      execFileSync('ip', ['netns', 'exec', space, 'ip', 'link', 'set', 'lo', 'up'])
      const ran = await new Promise<Ran>((resolve) =>
        execFile(
          'ip',
          ['netns', 'exec', space, 'bash', '-e', 'script.sh'],
          { cwd: work, timeout: 60_000, env: { ...process.env, PATH: `${join(work, 'bin')}:${process.env.PATH}` } },
          (error, stdout, stderr) =>
            resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
        ),
      )
      expect(ran.stderr).toBe('')
      expect(ran.code).toBe(0)
      const lines = ran.stdout.split('\n')
      expect(lines).toContain('svc\tok\t{"Sum":8,"Diff":2}')
      expect(lines).toContain('sent to svc')
      expect(lines).toContain('Arith.SumDiff')
      expect(existsSync(join(work, 'node.key.pub'))).toBe(true)
    } finally {
      spawnSync('ip', ['netns', 'del', space])
      rmSync(work, { recursive: true, force: true })
    }
  })
})
