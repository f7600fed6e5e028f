import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const VERSION: string = require('../../package.json').version;
export const PROTOCOL_VERSION = [1, 0] as const;
