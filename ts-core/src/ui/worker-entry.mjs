// Worker thread entry for the live page: workers do not inherit tsx's loader, so register it here.
import { register } from 'tsx/esm/api';
register();
await import('./worker.ts');
