import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { once } from 'node:events'
import { Bilateral, type BilateralOptions, type MemberInfo } from '../lib/index.js'

/** Timings short enough for tests, long enough for a loaded 2-core machine (child processes use spec/fixtures/fast.mjs, the same). */
export const FAST = {
  pingInterval: 100,
  peerTimeout: 600,
  joinInterval: 100,
  reconnectMin: 20,
  reconnectMax: 300,
  linger: 100,
} satisfies Partial<BilateralOptions>

const open: Bilateral[] = []

/** A node with fast timings, closed by {@link closeAll}. */
export function makeNode(name: string, options: Partial<BilateralOptions> = {}): Bilateral {
  const node = new Bilateral({ network: 'test net', name, ...FAST, ...options })
  open.push(node)
  return node
}

export async function closeAll(): Promise<void> {
  await Promise.all(open.splice(0).map((node) => node.close()))
}

/** `dialler` connects to `listener` (which listens on a fresh port); both see each other. */
export async function pair(dialler: Bilateral, listener: Bilateral): Promise<string> {
  const endpoint = await listener.listen('tcp://127.0.0.1:*')
  dialler.connect(listener.name, endpoint)
  await Promise.all([dialler.waitForPeers([listener.name], { timeout: 5000 }), listener.waitForPeers([dialler.name], { timeout: 5000 })])
  return endpoint
}

export class Arith {
  SumDiff(args: { A: number; B: number }) {
    return { S: args.A + args.B, D: args.A - args.B }
  }
}

/** Resolve with the next `event` arguments, or reject after `ms`. */
export function nextEvent<T extends unknown[]>(emitter: Bilateral, event: string, ms = 5000): Promise<T> {
  return once(emitter, event, { signal: AbortSignal.timeout(ms) }) as Promise<T>
}

/** Make sure dist/ exists for tests that run the compiled code in child processes. */
export function ensureBuilt(): void {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    execFileSync('npx', ['tsc', '-p', '.'], { cwd: new URL('..', import.meta.url), stdio: 'inherit' })
  }
}

/** A promise and its resolver, for handlers that report being called. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: Error) => void } {
  let resolve!: (value: T) => void
  let reject!: (error: Error) => void
  const promise = new Promise<T>((yes, no) => ((resolve = yes), (reject = no)))
  return { promise, resolve, reject }
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Resolves with the member as `node` shows it once `node` hears `kind` of
 * member `name` (a member event), or at once if it is there already: in the
 * table and not gone or left (join), gone or left (leave). Updates are
 * waited for.
 */
export function heard(node: Bilateral, kind: 'join' | 'update' | 'leave', name: string, ms = 10_000): Promise<MemberInfo> {
  const away = (m: MemberInfo): boolean => m.state === 'gone' || m.state === 'left'
  const now = kind === 'update' ? undefined : node.members().find((m) => m.name === name && (kind === 'join') !== away(m))
  if (now !== undefined) return Promise.resolve(now)
  return within(
    new Promise<MemberInfo>((resolve) => {
      const listener = (m: MemberInfo): void => {
        if (m.name !== name) return
        node.off(`member:${kind}`, listener)
        resolve(m)
      }
      node.on(`member:${kind}`, listener)
    }),
    ms,
    `${node.name} hearing ${kind} of ${name.slice(0, 12)}`,
  )
}

/** Poll `check` every 20 ms until it holds, within `ms`: for a condition no event announces. */
export async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  // The loop itself ends at the deadline: a condition that never holds leaves nothing polling after the test.
  const deadline = performance.now() + ms
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
