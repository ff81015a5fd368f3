// The interceptor chain on its own: what each run gathers, when the gathered
// list is reused, and what a refusal tells. No sockets: the real paths are in
// metrics.spec.ts.
import { describe, expect, it } from 'vitest'
import { Chain } from '../lib/observe/interceptors.js'

type Observer = (n: number) => void
const refusals: { context: string; gathered: readonly Observer[]; error: unknown }[] = []
const refused = (context: string, gathered: readonly Observer[], error: unknown): void => void refusals.push({ context, gathered, error })

describe('Chain', () => {
  it('gathers the observers the hooks return, in order, and reuses the list while they are the same', () => {
    const chain = new Chain<number, Observer>()
    expect(chain.run(1, refused, 'x')).toBeUndefined()
    const a: Observer = () => {}
    const b: Observer = () => {}
    chain.add(() => a)
    chain.add((n) => (n % 2 === 0 ? b : undefined))
    const odd = chain.run(1, refused, 'x')
    expect(odd).toEqual([a])
    const even = chain.run(2, refused, 'x')
    expect(even).toEqual([a, b])
    // The list handed out for 1 is unchanged by the run for 2.
    expect(odd).toEqual([a])
    expect(chain.run(4, refused, 'x')).toBe(even)
    expect(chain.run(3, refused, 'x')).toEqual([a])
    const fresh: Observer[] = []
    const chain2 = new Chain<number, Observer>()
    chain2.add(() => {
      const o: Observer = () => {}
      fresh.push(o)
      return o
    })
    const first = chain2.run(1, refused, 'y')
    const second = chain2.run(2, refused, 'y')
    expect(first).toEqual([fresh[0]])
    expect(second).toEqual([fresh[1]])
  })

  it('a hook that throws refuses the call: those gathered before it are told, and the error goes on', () => {
    refusals.length = 0
    const chain = new Chain<number, Observer>()
    const a: Observer = () => {}
    chain.add(() => a)
    const remove = chain.add((n) => {
      if (n > 1) throw new Error('no')
    })
    chain.run(1, refused, 'first')
    expect(() => chain.run(2, refused, 'second')).toThrow('no')
    expect(refusals).toEqual([{ context: 'second', gathered: [a], error: new Error('no') }])
    remove()
    expect(chain.length).toBe(1)
    expect(chain.run(2, refused, 'third')).toEqual([a])
  })

  it('a hook that returns a promise refuses the call, and its rejection is handled', () => {
    refusals.length = 0
    const chain = new Chain<number, Observer>()
    chain.add(() => Promise.reject(new Error('late')) as unknown as Observer)
    expect(() => chain.run(1, refused, 'z')).toThrow(/returned a promise/)
    // Nothing was gathered before it, so no observer is told.
    expect(refusals).toEqual([])
  })
})
