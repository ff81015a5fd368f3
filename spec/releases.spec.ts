/**
 * Mixed releases: this release beside a real node of the previous one, built
 * from this repository's history (the commit before calls got a lifecycle),
 * each in its own process, calling the other both ways over the one
 * connection, whichever side dialled. The previous release knows nothing of
 * deadlines, metadata or CANCEL; it must never be sent them, and nothing it
 * sends may break the new one.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { CallContext } from '../lib/index.js'
import { closeAll, deferred, makeNode } from './helpers.js'

/** The last commit of the previous release: calls without a lifecycle. */
const PREVIOUS_RELEASE = '1f042e3b59e2ae7262687606572b01936d9af29a'
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const FIXTURE = fileURLToPath(new URL('./fixtures/release.mjs', import.meta.url))
/** One build per checkout: it links to that checkout's node_modules, which another checkout's removal must not break. */
const BUILD = join(
  tmpdir(),
  `bilateral-release-${PREVIOUS_RELEASE.slice(0, 12)}-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}`,
)
const children: ChildProcess[] = []

/** Build the previous release's lib/ into BUILD/dist, once (git archive of that commit, this checkout's node_modules). */
function buildPrevious(): void {
  if (existsSync(join(BUILD, 'dist', 'index.js'))) return
  if (!hasCommit()) {
    // A shallow clone (some CI checkouts) lacks the history: fetch it from where the clone came from.
    execFileSync('git', ['-C', ROOT, 'fetch', '--quiet', '--unshallow'], { stdio: 'inherit' })
    if (!hasCommit()) throw new Error(`the previous release's commit ${PREVIOUS_RELEASE} is not in this clone's history`)
  }
  mkdirSync(BUILD, { recursive: true })
  const archive = execFileSync('git', ['-C', ROOT, 'archive', PREVIOUS_RELEASE, 'lib', 'tsconfig.json', 'package.json'])
  execFileSync('tar', ['-x', '-C', BUILD], { input: archive })
  if (!existsSync(join(BUILD, 'node_modules'))) symlinkSync(join(ROOT, 'node_modules'), join(BUILD, 'node_modules'))
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', BUILD], { stdio: 'inherit' })
}

function hasCommit(): boolean {
  try {
    execFileSync('git', ['-C', ROOT, 'cat-file', '-e', `${PREVIOUS_RELEASE}^{commit}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

beforeAll(buildPrevious, 120_000)
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL')
  await closeAll()
})

/** Start the previous release's node; resolves with the first line it prints. */
async function previous(...args: string[]): Promise<string> {
  const child = spawn(process.execPath, [FIXTURE, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, BILATERAL_DIST: join(BUILD, 'dist') },
  })
  children.push(child)
  const line = deferred<string>()
  const timer = setTimeout(() => line.reject(new Error('the previous release printed nothing within 10 s')), 10_000)
  child.once('exit', (code) => line.reject(new Error(`the previous release exited (${code})`)))
  createInterface({ input: child.stdout! }).once('line', (text) => (clearTimeout(timer), line.resolve(text)))
  return line.promise
}

/** A node of this release with a handler that records its ctx. */
function current() {
  const node = makeNode('new')
  const seen: CallContext[] = []
  node.register(
    {
      Echo: (x: unknown, ctx: CallContext) => (seen.push(ctx), x),
      // Details of 2 KiB: more than the previous release decodes in an envelope, so they must not be sent to it.
      Fail: () => Promise.reject(Object.assign(new Error('no'), { code: 'E_NO', details: 'd'.repeat(2048) })),
    },
    'New',
  )
  return { node, seen }
}

/** Calls both ways, with every new option on ours, and a cancelled call in between. */
async function exercise(node: ReturnType<typeof current>['node'], seen: CallContext[]): Promise<void> {
  const opts = { timeout: 1500, meta: { traceparent: '00-1-2-01' } }
  expect(await node.call(['old'], 'Old.Echo', 'there', opts)).toEqual([{ from: 'old', ok: true, reply: 'there' }])
  // Cancelled in flight: the old node gets no CANCEL (it would not know the frame), and keeps serving.
  const controller = new AbortController()
  const hung = node.call(['old'], 'Old.Hang', null, { signal: controller.signal, timeout: 60_000 })
  setImmediate(() => controller.abort())
  expect(await hung).toMatchObject([{ ok: false, error: { code: 'CANCELLED' } }])
  const quorum = await node.call(['old', 'missing'], 'Old.Echo', 1, { until: 'first-ok' })
  expect(quorum.map((r) => r.ok)).toEqual([true, false])
  // The other way, over the same connection: the old node's call reaches our handler, which sees no deadline.
  const back = await node.call(['old'], 'Old.Ask', { peer: 'new', method: 'New.Echo', args: 'back' }, { timeout: 5000 })
  expect(back).toEqual([{ from: 'old', ok: true, reply: { ok: true, reply: 'back' } }])
  expect(seen.at(-1)).toMatchObject({ from: 'old', deadline: undefined, meta: {} })
  // A handler error with details reaches it as REMOTE (an ERROR it could not decode would leave it waiting: TIMEOUT).
  const failed = await node.call(['old'], 'Old.Ask', { peer: 'new', method: 'New.Fail', args: null }, { timeout: 5000 })
  expect(failed).toEqual([{ from: 'old', ok: true, reply: { ok: false, code: 'REMOTE' } }])
  // Nothing we sent was dropped as unknown or malformed there.
  expect(await node.call(['old'], 'Old.Dropped')).toEqual([{ from: 'old', ok: true, reply: 0 }])
  expect(node.stats()).toMatchObject({ pending: 0, dropped: 0 })
}

describe('this release with a node of the previous release', () => {
  it('dialling it: calls both ways, options it cannot read are not sent', async () => {
    const line = await previous('listen', 'old')
    const { node, seen } = current()
    node.connect('old', line.replace(/^endpoint /, ''))
    await node.waitForPeers(['old'], { timeout: 10_000 })
    await exercise(node, seen)
  })

  it('dialled by it: the same', async () => {
    const { node, seen } = current()
    const endpoint = await node.listen('tcp://127.0.0.1:*')
    expect(await previous('dial', 'old', 'new', endpoint)).toBe('ready')
    await node.waitForPeers(['old'], { timeout: 10_000 })
    await exercise(node, seen)
  })
})
