// The wire's one definition, loaded: proto/v1/<type>.schema.json for the header fields and
// proto/v1/step-buffers.json for the step buffer table. validate.ts compiles these with ajv and walks
// them for coded errors; the Python shim's wire/tables.py is generated from the same files.
// Static JSON imports, so that esbuild bundles the files into the packaged engine (scripts/build-engine.mjs).
import ack from '../../../proto/v1/ack.schema.json' with { type: 'json' };
import bye from '../../../proto/v1/bye.schema.json' with { type: 'json' };
import directive from '../../../proto/v1/directive.schema.json' with { type: 'json' };
import error from '../../../proto/v1/error.schema.json' with { type: 'json' };
import hello from '../../../proto/v1/hello.schema.json' with { type: 'json' };
import step from '../../../proto/v1/step.schema.json' with { type: 'json' };
import stepBuffers from '../../../proto/v1/step-buffers.json' with { type: 'json' };
import welcome from '../../../proto/v1/welcome.schema.json' with { type: 'json' };
import type { Dtype, Limits, MessageType } from './messages.ts';

/** The JSON Schema subset proto/v1 uses (draft-07). */
export interface Schema {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  pattern?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema | Schema[];
  minItems?: number;
  maxItems?: number;
  oneOf?: Schema[];
  anyOf?: Schema[];
  if?: Schema;
  then?: Schema;
  else?: Schema;
  default?: unknown;
  $comment?: string;
  description?: string;
  [k: string]: unknown;
}

export const SCHEMA_TYPES = ['hello', 'welcome', 'step', 'directive', 'ack', 'error', 'bye'] as const satisfies readonly MessageType[];

export const SCHEMAS: Readonly<Record<MessageType, Schema>> = Object.freeze({ hello, welcome, step, directive, ack, error, bye } as Record<MessageType, Schema>);

interface StepBufferTable {
  dtype_bytes: Record<Dtype, number>;
  buffers: Record<string, { dtype: Dtype; per: 'token' | 'seq' | 'offsets' }>;
  required: string[];
}
const table = stepBuffers as StepBufferTable;

// Null-prototype tables: they are indexed by client strings (`constructor`, `__proto__` are not dtypes or buffer names).
const bare = <T extends object>(o: T): T => Object.freeze(Object.assign(Object.create(null), o));
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = bare(table.dtype_bytes);
/** Step buffer names: dtype and what the length counts (T tokens, n_seqs, or n_seqs+1). */
export const STEP_BUFFERS: Readonly<StepBufferTable['buffers']> = bare(table.buffers);
export const REQUIRED_STEP_BUFFERS: readonly string[] = Object.freeze(table.required);

const limitProps = SCHEMAS.welcome.properties!.limits.properties!;
/** What both sides assume until a `welcome` says otherwise: the `default`s of welcome.limits. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze(
  Object.fromEntries(SCHEMAS.welcome.properties!.limits.required!.map((k) => [k, limitProps[k].default as number])) as unknown as Limits,
);

/** run_id pattern, from the schemas (the store names run directories with it). */
export const RUN_ID_RE = new RegExp(SCHEMAS.hello.properties!.run_id.pattern!);
/** Protocol major version: the `const` of version[0]. */
export const PROTOCOL_MAJOR = (SCHEMAS.hello.properties!.version.items as Schema[])[0].const as number;
export const PROTOCOL_MINOR = 0;
