// Protocol v1: codec, validation, errors, message shapes.
export * from './errors.ts';
export * from './messages.ts';
export * from './validate.ts';
export * from './codec.ts';
export * from './checksum.ts';
