export * from './pipeline.ts';
export * from './run.ts';
export * from './registry.ts';
export * from './assembler.ts';
export * from './received.ts';
