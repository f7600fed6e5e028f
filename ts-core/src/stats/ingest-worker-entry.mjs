// Ingest worker entry from source: workers do not inherit tsx's loader, so register it here (the bundle
// starts dist/engine/ingest-worker.mjs instead: scripts/build-engine.mjs).
import { register } from 'tsx/esm/api';
register();
await import('./ingest-worker.ts');
