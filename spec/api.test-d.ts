import { expectTypeOf, test } from 'vitest'
import { Bilateral, BilateralError, RemoteError, type CallContext, type CallResult } from '../lib/index.js'

test('the public API has the pinned shapes', () => {
  const node = new Bilateral({ network: 'n', name: 'a' })
  expectTypeOf(node.name).toEqualTypeOf<string>()
  expectTypeOf(node.listen).returns.toEqualTypeOf<Promise<string>>()
  expectTypeOf(node.connect).returns.toEqualTypeOf<void>()
  expectTypeOf(node.activeConnections).returns.toEqualTypeOf<string[]>()
  expectTypeOf(node.connectionCount).returns.toEqualTypeOf<number>()
  expectTypeOf(node.call<{ S: number }>([], 'Arith.SumDiff', {})).resolves.toEqualTypeOf<CallResult<{ S: number }>[]>()
  expectTypeOf(node.cast).returns.toEqualTypeOf<Promise<string[]>>()
  expectTypeOf<CallResult<number>>().toEqualTypeOf<
    { from: string; ok: true; reply: number } | { from: string; ok: false; error: BilateralError }
  >()
  expectTypeOf<RemoteError>().toMatchTypeOf<BilateralError>()
  expectTypeOf<CallContext['from']>().toEqualTypeOf<string>()
  node.on('peer:down', (name, reason) => {
    expectTypeOf(name).toEqualTypeOf<string>()
    expectTypeOf(reason).toEqualTypeOf<'PART' | 'HEARTBEAT' | 'TIMEOUT' | 'AUTH' | 'LOST' | 'PROTOCOL' | 'DISCONNECT' | 'CLOSED'>()
  })
})
