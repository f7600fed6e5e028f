#!/usr/bin/env node
// Entry for `npx tailguard`: run the TypeScript CLI through tsx's loader (no build step).
import { register } from 'tsx/esm/api';
register();
await import('../src/cli.ts');
