// The file-descriptor budget on its own, with a fake count and clock: how
// often it counts, and that it refuses before the reserve, never after.
import { describe, expect, it } from 'vitest'
import { FdBudget, UNSEEN_FDS, reserveFor } from '../lib/mesh/fds.js'

describe('the file-descriptor budget', () => {
  it('counts at most once a second far from the limit, and at most every 100 ms near it, however many dials', () => {
    let open = 100
    let counts = 0
    let now = 0
    const budget = new FdBudget(
      1000,
      () => (counts++, open),
      () => now,
    )
    for (let i = 0; i < 50; i++) expect(budget.take(4)).toBe(true)
    expect(counts).toBe(1)
    now = 1001
    budget.take(4)
    expect(counts).toBe(2)
    // Near the limit (within twice the reserve): a count per 100 ms at most, not one per dial.
    open = 1000 - 2 * reserveFor(1000) - 10
    now = 2100
    budget.take(4)
    const before = counts
    for (let i = 0; i < 5; i++) budget.take(1)
    expect(counts).toBe(before)
    now += 101
    budget.take(1)
    expect(counts).toBe(before + 1)
  })

  it('between counts, what was taken is added: a dial is refused early, never late', () => {
    let now = 0
    const limit = 1000
    const reserve = reserveFor(limit)
    let open = limit - reserve - UNSEEN_FDS - 8
    const budget = new FdBudget(
      limit,
      () => open,
      () => now,
    )
    expect(budget.take(4)).toBe(true)
    expect(budget.take(4)).toBe(true)
    // The reserve is reached by the estimate: refused, though nothing was counted since.
    expect(budget.take(4)).toBe(false)
    // Counted again, the two dials taken show: still refused.
    open += 8
    now = 5000
    expect(budget.take(4)).toBe(false)
  })

  it('a count that lags behind the takes before it (descriptors libzmq opens later) still keeps the reserve', () => {
    let now = 0
    const limit = 1000
    const reserve = reserveFor(limit)
    const start = limit - reserve - UNSEEN_FDS - 40
    let open = start
    const budget = new FdBudget(
      limit,
      () => open,
      () => now,
    )
    let taken = 0
    while (budget.take(1)) taken++
    expect(taken).toBe(40)
    // Counted again while libzmq has opened only half of them: the other 20 come later, and must still fit.
    open = start + 20
    now = 5000
    expect(budget.take(1)).toBe(false)
    expect(start + taken).toBeLessThanOrEqual(limit - reserve)
  })
})
