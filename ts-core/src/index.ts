// Public exports only.
export * from './types.ts';
export { VERSION, PROTOCOL_VERSION } from './version.ts';
