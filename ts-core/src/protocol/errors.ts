// Protocol errors: every rejection of client input is a ProtocolError with a stable code
// (proto/README.md "Error codes"). The code is what goes on the wire; the message is for humans.

export const ERROR_CODES = [
  'E_HEADER_DECODE',
  'E_HEADER_TYPE',
  'E_VERSION',
  'E_UNKNOWN_TYPE',
  'E_MISSING_FIELD',
  'E_FIELD_TYPE',
  'E_DTYPE',
  'E_FRAME_COUNT',
  'E_FRAME_LENGTH',
  'E_TOO_LARGE',
  'E_OFFSETS',
  'E_NO_SESSION',
  'E_RUN_ID',
  'E_RANK',
  'E_DUPLICATE',
  'E_CHUNK',
  'E_SKETCH_LAYOUT',
  'E_LIMIT',
  // v1.1: the run store failed; a run id already holds a run; the memory budget is spent; the session was taken over.
  'E_STORE',
  'E_RUN_EXISTS',
  'E_BUDGET',
  'E_SESSION',
  // v1.2: the ingest worker holding the step died (serve --ingest-workers); the step was not counted.
  'E_WORKER',
  'E_INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Where in the input the error was found, as far as known (echoed as `error.ref`). */
export interface ErrorRef {
  type?: string;
  run_id?: string;
  rank?: number;
  step?: number;
  chunk?: number;
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';
  readonly code: ErrorCode;
  /** True when the client must send a new `hello` before anything else is accepted. */
  fatal: boolean;
  ref: ErrorRef;
  /** Sent as `retryable: true`: resending the same message later may succeed (the shim retries with backoff). */
  retryable: boolean;

  constructor(code: ErrorCode, message: string, opts: { fatal?: boolean; ref?: ErrorRef; cause?: unknown; retryable?: boolean } = {}) {
    super(`${code}: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.fatal = opts.fatal ?? false;
    this.ref = opts.ref ?? {};
    this.retryable = opts.retryable ?? false;
  }

  /** The message without the code prefix (the wire `error.message`). */
  get detail(): string {
    return this.message.slice(this.code.length + 2);
  }
}

export const isProtocolError = (e: unknown): e is ProtocolError => e instanceof ProtocolError;
