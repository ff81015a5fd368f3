import { expectTypeOf, test } from 'vitest'
import { EventEmitter } from 'node:events'
import {
  Bilateral,
  BilateralError,
  RemoteError,
  type CallContext,
  type CallResult,
  type ErrorCode,
  type Multicast,
  type Unicast,
} from '../lib/index.js'

/** A contract declared once, as the class that serves it. */
class Arith {
  SumDiff(args: { A: number; B: number }, _ctx?: CallContext): { Sum: number; Diff: number } {
    return { Sum: args.A + args.B, Diff: args.A - args.B }
  }
  async Slow(ms: number): Promise<string> {
    return String(ms)
  }
  Now(): number {
    return Date.now()
  }
  Maybe(label?: string): string {
    return label ?? ''
  }
  _private(): void {}
  field = 3
}

interface Users {
  Find(args: { id: string }): { id: string; name: string } | null
}

test('service<T>() types arguments and results from the contract', async () => {
  const node = new Bilateral({ network: 'n', name: 'a' })
  const one = node.service<Arith>('Arith', { peer: 'b' })
  expectTypeOf(one.SumDiff({ A: 5, B: 3 })).toEqualTypeOf<Promise<{ Sum: number; Diff: number }>>()
  expectTypeOf(one.Slow(5)).toEqualTypeOf<Promise<string>>()
  expectTypeOf(one.Now()).toEqualTypeOf<Promise<number>>()
  expectTypeOf(one.Maybe()).toEqualTypeOf<Promise<string>>()
  void one.SumDiff({ A: 1, B: 2 }, { timeout: 300 })
  // @ts-expect-error a wrong argument type
  void one.SumDiff({ A: '5', B: 3 })
  // @ts-expect-error a missing argument
  void one.SumDiff()
  // @ts-expect-error a method the contract lacks
  void one.Product({ A: 1, B: 2 })
  // @ts-expect-error names starting with _ are not exposed
  void one._private()
  // @ts-expect-error fields are not methods
  void one.field
  // @ts-expect-error options go second, and are an object
  void one.SumDiff({ A: 1, B: 2 }, 300)

  const all = node.service<Arith>('Arith', { peers: ['b', 'c'] })
  expectTypeOf(all.SumDiff({ A: 5, B: 3 })).toEqualTypeOf<Promise<CallResult<{ Sum: number; Diff: number }>[]>>()
  const every = node.service<Arith>('Arith')
  expectTypeOf(every.Now()).toEqualTypeOf<Promise<CallResult<number>[]>>()

  const users = node.service<Users>('Users', { peer: 'b' })
  expectTypeOf(users.Find({ id: 'x' })).toEqualTypeOf<Promise<{ id: string; name: string } | null>>()
})

test('register<T>() types the handler args and ctx where they are written', () => {
  const node = new Bilateral({ network: 'n', name: 'a' })
  node.register<Users>(
    {
      Find(args, ctx) {
        expectTypeOf(args).toEqualTypeOf<{ id: string }>()
        expectTypeOf(ctx).toEqualTypeOf<CallContext>()
        return { id: args.id, name: ctx.from }
      },
    },
    'Users',
  )
  node.register<Users>(
    // @ts-expect-error the result must be the contract's
    { Find: (args) => ({ id: args.id }) },
    'Users2',
  )
  // @ts-expect-error a contract method left out
  node.register<Users>({}, 'Users3')
  // A class instance registers without a type argument, as before.
  node.register(new Arith())
})

test('what register() does not expose is not offered: an EventEmitter receiver offers its own methods only', () => {
  class Feed extends EventEmitter {
    Latest(): number {
      return 1
    }
  }
  const node = new Bilateral({ network: 'n', name: 'a' })
  const feed = node.service<Feed>('Feed', { peer: 'b' })
  expectTypeOf(feed.Latest()).toEqualTypeOf<Promise<number>>()
  // @ts-expect-error emit is EventEmitter's, never exposed
  void feed.emit('x')
  node.register<Feed>({ Latest: () => 2 }, 'Feed')
  // A peer that may or may not be given: one of the two forms.
  const peer: string | undefined = undefined as string | undefined
  const either = node.service<Feed>('Feed', { peer })
  expectTypeOf(either).toEqualTypeOf<Unicast<Feed> | Multicast<Feed>>()
})

test('request() resolves to the reply; errors have a closed code union', async () => {
  const node = new Bilateral({ network: 'n', name: 'a' })
  expectTypeOf(node.request<number>('b', 'Arith.Now')).toEqualTypeOf<Promise<number>>()
  const e = new BilateralError('TIMEOUT', 'x')
  expectTypeOf(e.code).toEqualTypeOf<ErrorCode>()
  // @ts-expect-error a misspelt code does not compile
  void (e.code === 'TIMEOUTT')
  // @ts-expect-error nor can one be raised
  void new BilateralError('TIMEOUTT', 'x')
  const r = new RemoteError('b', { name: 'Error', message: 'm', code: 'E_NOUSER' })
  expectTypeOf(r.code).toEqualTypeOf<ErrorCode>()
  expectTypeOf(r.remoteCode).toEqualTypeOf<string | undefined>()
  expectTypeOf(r.path).toEqualTypeOf<readonly string[]>()
  expectTypeOf(r.details).toEqualTypeOf<unknown>()
})
