import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['ts-core/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Engine tests bind real sockets and spawn processes; two cores.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
