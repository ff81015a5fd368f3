// What a node says of itself: the logger option and DEBUG=bilateral, and
// waitForPeers giving up at once, with the cause, on a refusal that retrying
// cannot fix. Real nodes on loopback.
import { spawn } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { Bilateral, BilateralError } from '../lib/index.js'
import { generateKeypair } from '../lib/crypto.js'
import { lineLogger, wantsDebug } from '../lib/log.js'
import { FAST, closeAll, ensureBuilt, makeNode, pair, within } from './helpers.js'

afterEach(closeAll)

/** Resolves at `node`'s next peer:refused. */
const refusedOnce = (node: Bilateral): Promise<unknown> =>
  within(new Promise((resolve) => node.once('peer:refused', resolve)), 5000, 'a refusal')

interface Entry {
  level: string
  message: string
  fields: Record<string, unknown>
}

/** A logger that records, as pino's or console's shape is called: (fields, message). */
function recorder() {
  const entries: Entry[] = []
  const at = (level: string) => (fields: object, message: string) =>
    entries.push({ level, message, fields: fields as Record<string, unknown> })
  const logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
  /** Resolves with the first entry `match` accepts, now or later. */
  const next = (match: (e: Entry) => boolean, ms = 5000): Promise<Entry> =>
    within(
      (async () => {
        for (;;) {
          const found = entries.find(match)
          if (found !== undefined) return found
          await new Promise((resolve) => setTimeout(resolve, 5))
        }
      })(),
      ms,
      'the log entry',
    )
  return { logger, entries, next }
}

describe('the logger option', () => {
  it('logs peers up and down, dial attempts, refused joins with back-off and refused calls, with fields and no payloads', async () => {
    const { logger, entries, next } = recorder()
    const a = makeNode('a', { logger })
    const b = makeNode('b')
    b.register({ Echo: (x: unknown) => x }, 'Svc')
    await pair(a, b)
    expect(await next((e) => e.message === 'peer up')).toEqual({
      level: 'info',
      message: 'peer up',
      fields: { node: 'a', peer: 'b', direction: 'outbound' },
    })
    expect(entries.find((e) => e.message === 'dialling')).toMatchObject({ level: 'debug', fields: { node: 'a', peer: 'b' } })
    expect(String(entries.find((e) => e.message === 'dialling')!.fields['address'])).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/)

    // A call a refuses (as callee): logged at a, with the method and code; the arguments are not.
    b.register({ Ask: (_: unknown, ctx: { call: Bilateral['call'] }) => ctx.call(['a'], 'Nope.Missing', { secret: 'hunter2' }) }, 'Back')
    await b.call(['a'], 'Nope.Missing', { secret: 'hunter2' })
    expect(await next((e) => e.message === 'call refused')).toMatchObject({
      level: 'info',
      fields: { node: 'a', peer: 'b', method: 'Nope.Missing', code: 'NO_SUCH_METHOD' },
    })

    // A refused join: warned with its code, then the back-off before the next attempt.
    const other = makeNode('c', { network: 'another' })
    a.connect('c', await other.listen('tcp://127.0.0.1:*'))
    expect(await next((e) => e.message === 'peer refused')).toMatchObject({
      level: 'warn',
      fields: { peer: 'c', code: 'NETWORK_MISMATCH' },
    })
    const backoff = await next((e) => e.message === 'backing off' && e.fields['peer'] === 'c')
    expect(backoff.fields['retryInMs']).toBeGreaterThan(0)

    await b.close()
    expect(await next((e) => e.message === 'peer down')).toMatchObject({ level: 'info', fields: { peer: 'b', reason: 'PART' } })
    expect(JSON.stringify(entries)).not.toContain('hunter2')
  })

  it('logs handshake failures and refused keys on an encrypted listener', async () => {
    const { logger, next } = recorder()
    const [kb, kc] = await Promise.all([generateKeypair(), generateKeypair()])
    const b = makeNode(kb.publicKey, { keypair: kb, name: undefined, logger, authorizedKeys: [] })
    const endpoint = await b.listen('tcp://127.0.0.1:*')
    const plain = makeNode('plain')
    plain.connect(kb.publicKey, endpoint)
    expect(await next((e) => e.message === 'handshake failed')).toMatchObject({ level: 'warn', fields: { code: 'HANDSHAKE' } })
    const c = makeNode(kc.publicKey, { keypair: kc, name: undefined })
    c.connect(kb.publicKey, endpoint)
    expect(await next((e) => e.message === 'key refused')).toMatchObject({ level: 'warn', fields: { key: kc.publicKey } })
  })

  it('a logger that throws does not stop the node; one without the four methods is refused', async () => {
    const throwing = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} }
    throwing.info = () => {
      throw new Error('logger bug')
    }
    const a = makeNode('a', { logger: throwing })
    const b = makeNode('b')
    b.register({ Echo: (x: unknown) => x }, 'Svc')
    await pair(a, b)
    expect(await a.request('b', 'Svc.Echo', 1)).toBe(1)
    expect(() => new Bilateral({ network: 'n', name: 'x', logger: { info: () => {} } as never })).toThrow(
      'option logger must have debug, info, warn and error methods',
    )
  })
})

describe('what a hostile peer can put in a log', () => {
  it('a line escapes controls, separators and bidi overrides, and clips long text', () => {
    let out = ''
    lineLogger((line) => (out += line)).info({ a: 'x\u009b[31m\u007f', b: 'p\u2028q\u202e', c: 'y'.repeat(300), d: 'plain' }, 'm')
    expect(out.split('\n').length).toBe(2)
    expect(out).not.toMatch(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/)
    expect(out).toContain('a="x\\u009b[31m\\u007f"')
    expect(out).toContain(`c="${'y'.repeat(200)}…"`)
    expect(out.endsWith(' d=plain\n')).toBe(true)
  })

  it('refused calls are logged at most 20 a second, and the next line says how many were left out', async () => {
    const { logger, entries } = recorder()
    const a = makeNode('a', { logger })
    const b = makeNode('b')
    await pair(b, a)
    await Promise.all(Array.from({ length: 100 }, () => b.call(['a'], 'Nope.Missing')))
    expect(entries.filter((e) => e.message === 'call refused').length).toBe(20)
  })
})

describe('DEBUG=bilateral', () => {
  it('is read as the debug package and Node read it', () => {
    expect(wantsDebug({ DEBUG: 'bilateral' })).toBe(true)
    expect(wantsDebug({ DEBUG: 'express,bilateral:*' })).toBe(true)
    expect(wantsDebug({ DEBUG: '*' })).toBe(true)
    expect(wantsDebug({ DEBUG: '*,-bilateral' })).toBe(false)
    expect(wantsDebug({ DEBUG: 'express' })).toBe(false)
    expect(wantsDebug({ NODE_DEBUG: 'net,bilateral' })).toBe(true)
    expect(wantsDebug({})).toBe(false)
  })

  it('logs to stderr with no code change, one line a record', async () => {
    ensureBuilt()
    const dist = new URL('../dist/index.js', import.meta.url).href
    const script = `
      const { Bilateral } = await import(${JSON.stringify(dist)})
      const t = ${JSON.stringify(FAST)}
      const a = new Bilateral({ network: 'n', name: 'a', ...t }), b = new Bilateral({ network: 'n', name: 'b', ...t })
      a.connect('b', await b.listen('tcp://127.0.0.1:*'))
      await a.waitForPeers(['b'])
      await a.close(); await b.close()
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, DEBUG: 'bilateral' },
    })
    let err = ''
    child.stderr.on('data', (d: Buffer) => (err += d))
    expect(await within(new Promise((resolve) => child.on('exit', resolve)), 15_000, 'the child')).toBe(0)
    const lines = err.trim().split('\n')
    expect(lines).toContain('bilateral INFO peer up node=a peer=b direction=outbound')
    expect(lines.some((l) => /^bilateral DEBUG dialling node=a peer=b address=tcp:\/\/127\.0\.0\.1:\d+$/.test(l))).toBe(true)
    expect(lines.every((l) => l.startsWith('bilateral '))).toBe(true)
  })
})

describe('waitForPeers gives up at once on a refusal retrying cannot fix', () => {
  /** `waitForPeers` for a peer refused with `code`: rejects with it, naming the cause, well before its 20 s timeout. */
  async function refusedWith(code: string, setup: () => Promise<{ node: Bilateral; peer: string }>): Promise<void> {
    const { node, peer } = await setup()
    const started = performance.now()
    const error = await node.waitForPeers([peer], { timeout: 20_000 }).then(
      () => expect.fail('waitForPeers should reject'),
      (e: unknown) => e as BilateralError,
    )
    expect(performance.now() - started).toBeLessThan(5000)
    expect(error).toBeInstanceOf(BilateralError)
    expect(error).toMatchObject({ code, peer })
    expect(error.message).toContain('retrying will not change that')
  }

  it.each([
    [
      'NETWORK_MISMATCH',
      async () => {
        const node = makeNode('a')
        node.connect('b', await makeNode('b', { network: 'elsewhere' }).listen('tcp://127.0.0.1:*'))
        return { node, peer: 'b' }
      },
    ],
    [
      'WRONG_NAME',
      async () => {
        const node = makeNode('a')
        node.connect('b', await makeNode('not-b').listen('tcp://127.0.0.1:*'))
        return { node, peer: 'b' }
      },
    ],
    [
      'HANDSHAKE',
      async () => {
        const kb = await generateKeypair()
        const node = makeNode('a')
        node.connect(kb.publicKey, await makeNode(kb.publicKey, { keypair: kb, name: undefined }).listen('tcp://127.0.0.1:*'))
        return { node, peer: kb.publicKey }
      },
    ],
    [
      'AUTH',
      async () => {
        const [ka, kb] = await Promise.all([generateKeypair(), generateKeypair()])
        const b = makeNode(kb.publicKey, { keypair: kb, name: undefined, authorizedKeys: [] })
        const node = makeNode(ka.publicKey, { keypair: ka, name: undefined })
        node.connect(kb.publicKey, await b.listen('tcp://127.0.0.1:*'))
        return { node, peer: kb.publicKey }
      },
    ],
  ] as const)('%s', (code, setup) => refusedWith(code, setup))

  it("a stranger's JOIN refused under the name of a peer we dial does not end the wait for that peer", async () => {
    const node = makeNode('a')
    const at = await node.listen('tcp://127.0.0.1:*')
    const later = makeNode('b')
    const bAt = await later.listen('tcp://127.0.0.1:*')
    node.connect('b', bAt)
    await node.waitForPeers(['b'], { timeout: 5000 })
    await node.disconnect('b')
    await later.close()
    // b is dialled again (nothing listens there now); a stranger claims to be b, on another network, and is refused.
    node.connect('b', bAt)
    const refused = new Promise<void>((resolve) => node.once('peer:refused', () => resolve()))
    const wait = node.waitForPeers(['b'], { timeout: 1500 }).then(
      () => 'up',
      (e: BilateralError) => e.code,
    )
    makeNode('b', { network: 'elsewhere' }).connect('a', at)
    await within(refused, 5000, 'the stranger refused')
    expect(await wait).toBe('TIMEOUT')
  })

  it('a refusal from a node no longer there is not final: the peer fixed at the same address comes up', async () => {
    const node = makeNode('a')
    const wrong = makeNode('b', { network: 'elsewhere' })
    const endpoint = await wrong.listen('tcp://127.0.0.1:*')
    node.connect('b', endpoint)
    await refusedOnce(node)
    await wrong.close()
    // Its connection dropped: what refused it is gone with it.
    await within(
      (async () => {
        while (node.peers().find((p) => p.name === 'b')?.state === 'refused') await new Promise((resolve) => setTimeout(resolve, 10))
      })(),
      5000,
      'the drop',
    )
    const right = makeNode('b')
    await right.listen(endpoint)
    await node.waitForPeers(['b'], { timeout: 10_000 })
  })

  it('a peer that does not answer is waited for until the timeout, which names its last state', async () => {
    const node = makeNode('a')
    node.connect('gone', 'tcp://127.0.0.1:1')
    await expect(node.waitForPeers(['gone', 'never'], { timeout: 300 })).rejects.toThrow(
      /^peers not active after 300 ms: gone \(.*tcp:\/\/127\.0\.0\.1:1.*\), never \(not dialled by this node, and it has not dialled us\)$/,
    )
  })
})
