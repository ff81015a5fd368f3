import { expectTypeOf, test } from 'vitest'
import {
  Bilateral,
  BilateralError,
  RemoteError,
  type CallContext,
  type CallOptions,
  type CallResult,
  type CallStream,
  type Meta,
  type Until,
} from '../lib/index.js'

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
  expectTypeOf(node.stream<number>([], 'A.B')).toEqualTypeOf<CallStream<number>>()
  expectTypeOf<CallStream<number>>().toMatchTypeOf<AsyncIterable<CallResult<number>>>()
  expectTypeOf<CallStream['targets']>().toEqualTypeOf<readonly string[]>()
  expectTypeOf<CallOptions['signal']>().toEqualTypeOf<AbortSignal | undefined>()
  expectTypeOf<CallOptions['until']>().toEqualTypeOf<Until | undefined>()
  expectTypeOf<CallContext['deadline']>().toEqualTypeOf<number | undefined>()
  expectTypeOf<CallContext['signal']>().toEqualTypeOf<AbortSignal>()
  expectTypeOf<CallContext['meta']>().toEqualTypeOf<Meta>()
  expectTypeOf<CallContext['call']>().returns.toEqualTypeOf<Promise<CallResult<unknown>[]>>()
  // @ts-expect-error metadata values are strings or bytes
  void node.call([], 'A.B', null, { meta: { n: 1 } })
  const writeMeta = (ctx: CallContext): void => {
    // @ts-expect-error ctx.meta is read-only
    ctx.meta['k'] = 'v'
  }
  expectTypeOf(writeMeta).toBeFunction()
  node.on('peer:down', (name, reason) => {
    expectTypeOf(name).toEqualTypeOf<string>()
    expectTypeOf(reason).toEqualTypeOf<'PART' | 'HEARTBEAT' | 'TIMEOUT' | 'AUTH' | 'LOST' | 'PROTOCOL' | 'DISCONNECT' | 'CLOSED'>()
  })
})
