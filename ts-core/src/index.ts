// Public exports only: what `import ... from 'tailguard'` gives a TypeScript or JavaScript user.
export * from './types.ts';
export { VERSION, PROTOCOL_VERSION } from './version.ts';
// Protocol v1: the codec and its stable E_* errors.
export { decodeMessage, encodeMessage, decodeHeader, encodeHeader, type Message } from './protocol/codec.ts';
export { ProtocolError, ERROR_CODES, type ErrorCode } from './protocol/errors.ts';
// Statistics, detection and policy, usable without a server (e.g. over a replayed capture).
export { RunStats, headlineMetrics, HEADLINE_METRICS, type RunStatsOptions } from './stats/index.ts';
export { Controller, loadPolicy, defaultPolicy, validatePolicy, PolicyError, DEFAULT_POLICY_FILE, type Policy, type PolicyOverride } from './policy/index.ts';
// The run store and the report (the server itself runs through the CLI: `tailguard serve`).
export { RunStore, readRun, type RunData } from './store/index.ts';
export { reportHtml, reportFromDir } from './report/index.ts';
export { readRecording, type RecordingRead } from './record/index.ts';
export { replayRecording } from './record/replay.ts';
