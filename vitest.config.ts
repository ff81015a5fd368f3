import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['spec/**/*.spec.ts'],
    // Native sockets and child processes: one process per test file.
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 10_000,
    typecheck: { enabled: true, include: ['spec/**/*.test-d.ts'] },
  },
})
