import { availableParallelism } from 'node:os'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['spec/**/*.spec.ts'],
    // Native sockets and child processes: one process per test file.
    pool: 'forks',
    // Two files at a time at least: the tests wait on sockets, timers and child processes more than they compute,
    // and vitest's default on a 2-core machine is one (the suite took 227 s so, 139 s with two).
    maxWorkers: Math.max(2, availableParallelism()),
    minWorkers: Math.max(2, availableParallelism()),
    testTimeout: 20_000,
    hookTimeout: 10_000,
    typecheck: { enabled: true, include: ['spec/**/*.test-d.ts'] },
  },
})
