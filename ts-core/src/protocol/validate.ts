// Header validation (proto/README.md "Validation order", stages B3..B7), driven by proto/v1/*.schema.json.
// ajv compiles each type's schema once at startup and answers the hot path (a valid header); only a header
// ajv rejects is walked field by field (schema-check.ts) to name the first failure with its stable code.
// The rules a JSON Schema cannot say (rank < world_size, index < count, buffer table, sizes) are below.
import { Ajv } from 'ajv';
import { ProtocolError, type ErrorRef } from './errors.ts';
import { MESSAGE_TYPES, type BufferDesc, type Header, type Limits } from './messages.ts';
import { checkObject, checkValue, describe, isMap } from './schema-check.ts';
import { DEFAULT_LIMITS, DTYPE_SIZE, PROTOCOL_MAJOR, SCHEMAS, SCHEMA_TYPES, STEP_BUFFERS, type Schema } from './schemas.ts';

export { describe } from './schema-check.ts';
export { DEFAULT_LIMITS, DTYPE_SIZE, PROTOCOL_MAJOR, PROTOCOL_MINOR, REQUIRED_STEP_BUFFERS, RUN_ID_RE, STEP_BUFFERS } from './schemas.ts';

type H = Record<string, unknown>;
const fail = (code: ProtocolError['code'], msg: string, ref: ErrorRef): never => {
  throw new ProtocolError(code, msg, { ref });
};

/** Fields marked `"$comment": "stage D: ..."` belong to the sketch payload check (protocol/sketch.ts). */
const isStageD = (s: Schema | undefined) => typeof s?.$comment === 'string' && s.$comment.startsWith('stage D');

interface Prepared {
  /** B5: the type's fields, without type/version (B3/B4), stage-D fields, or buffer entries (B6). */
  fields: Schema;
  /** B6: one buffer descriptor, its dtype enum lifted out so an unknown dtype is E_DTYPE. */
  bufferItem: Schema;
  dtypes: readonly string[];
}

function prepare(schema: Schema): Prepared {
  const s = structuredClone(schema);
  const drop = new Set(['type', 'version', ...Object.entries(s.properties ?? {}).filter(([, p]) => isStageD(p)).map(([k]) => k)]);
  const keep = (req?: string[]) => req?.filter((k) => !drop.has(k));
  s.properties = Object.fromEntries(Object.entries(s.properties ?? {}).filter(([k]) => !drop.has(k)));
  s.required = keep(s.required);
  for (const b of [s.then, s.else]) if (b) b.required = keep(b.required);
  const item = structuredClone((s.properties.buffers?.items ?? { type: 'object' }) as Schema);
  const dtype = item.properties?.dtype ?? {};
  const dtypes = (dtype.enum ?? []) as string[];
  delete dtype.enum;
  if (s.properties.buffers) s.properties.buffers = { ...s.properties.buffers, items: { type: 'object' } };
  return { fields: s, bufferItem: item, dtypes };
}

const PREPARED = Object.fromEntries(SCHEMA_TYPES.map((t) => [t, prepare(SCHEMAS[t])])) as Record<string, Prepared>;
// strictRequired off: if/then branches require properties declared at the top. strictNumbers off: NaN/Inf in
// logs and knobs are data (findings), not protocol errors; `finite` fields say so with min/max bounds.
const ajv = new Ajv({ strict: true, strictRequired: false, strictNumbers: false, allErrors: false });
const COMPILED = Object.fromEntries(SCHEMA_TYPES.map((t) => [t, ajv.compile(SCHEMAS[t])]));

/**
 * For tests: ajv's verdict and the walk's first failure on a header that passed B3/B4. They must agree,
 * except where ajv rejects only a stage-D (sketch payload) field, which the walk leaves to stage D.
 */
export function schemaVerdicts(h: H): { ajv: boolean; ajvPaths: string[]; walk: string | null } {
  const validate = COMPILED[h.type as string];
  const ok = validate(h);
  const ajvPaths = (validate.errors ?? []).map((e) => `${e.instancePath}${e.keyword === 'required' ? `/${(e.params as { missingProperty: string }).missingProperty}` : ''}`);
  let walk: string | null = null;
  const prep = PREPARED[h.type as string];
  try {
    checkObject(prep.fields, h, '', {});
    for (const b of (h.buffers ?? []) as BufferDesc[]) {
      checkValue(prep.bufferItem, b, 'buffers[]', {});
      if (!prep.dtypes.includes(b.dtype)) throw new ProtocolError('E_DTYPE', b.dtype);
    }
  } catch (e) {
    walk = (e as ProtocolError).code;
  }
  return { ajv: ok, ajvPaths, walk };
}

/** Where an error in this header points, from whatever fields are readable. */
export function refOf(h: H): ErrorRef {
  // Only values the error schema allows (uints), so an echo of bad input is itself a valid error.
  const uint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const ref: ErrorRef = {};
  if (typeof h.type === 'string') ref.type = h.type;
  if (typeof h.run_id === 'string') ref.run_id = h.run_id;
  if (uint(h.rank)) ref.rank = h.rank;
  if (uint(h.step)) ref.step = h.step;
  const c = h.chunk as H | undefined;
  if (isMap(c) && uint(c.index)) ref.chunk = c.index;
  return ref;
}

/**
 * Stages B3..B7: version, type, the type's fields, buffer descriptors and declared sizes.
 * `h` is a decoded header map (stage B1/B2 done). Returns the header typed; throws ProtocolError.
 */
export function validateHeader(h: H, limits: Limits = DEFAULT_LIMITS): Header {
  const ref = refOf(h);
  // B3: version first, so a future major with new types is reported as E_VERSION.
  const ver = h.version;
  if (ver === undefined) fail('E_MISSING_FIELD', 'missing required field version', ref);
  if (!Array.isArray(ver) || ver.length !== 2 || !ver.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0))
    fail('E_FIELD_TYPE', `version must be [major, minor] non-negative integers, got ${describe(ver)}`, ref);
  const [major] = ver as number[];
  if (major !== PROTOCOL_MAJOR)
    throw new ProtocolError('E_VERSION', `protocol major ${major} is not supported (this side speaks ${PROTOCOL_MAJOR}.x)`, { ref, fatal: true });
  // B4
  if (h.type === undefined) fail('E_MISSING_FIELD', 'missing required field type', ref);
  if (typeof h.type !== 'string') fail('E_FIELD_TYPE', `type must be a string, got ${describe(h.type)}`, ref);
  const type = h.type as string;
  if (!(MESSAGE_TYPES as readonly string[]).includes(type)) fail('E_UNKNOWN_TYPE', `unknown message type ${JSON.stringify(type)}`, ref);
  // B5. A header ajv rejects may still pass the walk: then what it broke is a stage-D (sketch) field.
  const valid = COMPILED[type](h);
  const prep = PREPARED[type];
  if (!valid) checkObject(prep.fields, h, '', ref);
  const c = h.chunk as { index: number; count: number } | undefined;
  if (type === 'step' && c!.index >= c!.count) fail('E_FIELD_TYPE', `chunk.index ${c!.index} must be < chunk.count ${c!.count}`, ref);
  if ((type === 'hello' || type === 'step') && (h.rank as number) >= (h.world_size as number))
    fail('E_RANK', `rank ${h.rank} must be < world_size ${h.world_size}`, ref);
  // B6 + B7
  if (h.buffers !== undefined) checkBuffers(h, h.buffers as BufferDesc[], prep, valid, limits, ref);
  return h as Header;
}

function checkBuffers(h: H, raw: BufferDesc[], prep: Prepared, valid: boolean, limits: Limits, ref: ErrorRef): void {
  const isStep = h.type === 'step';
  const seen = new Set<string>();
  for (let i = 0; i < raw.length; i++) {
    const p = `buffers[${i}]`;
    if (!valid) checkValue(prep.bufferItem, raw[i], p, ref);
    const { name, dtype } = raw[i];
    if (!prep.dtypes.includes(dtype)) fail('E_DTYPE', `${p} (${name}): unknown dtype ${JSON.stringify(dtype)}`, ref);
    const known = isStep ? STEP_BUFFERS[name] : undefined;
    if (known && known.dtype !== dtype) fail('E_DTYPE', `buffer ${name} must be ${known.dtype}, got ${dtype}`, ref);
    if (seen.has(name)) fail('E_FIELD_TYPE', `buffer ${name} is listed twice`, ref);
    seen.add(name);
  }
  // B7: declared sizes, before any frame is looked at.
  let total = 0;
  for (const b of raw) {
    const bytes = b.length * DTYPE_SIZE[b.dtype];
    if (bytes > limits.max_frame_bytes)
      fail('E_TOO_LARGE', `buffer ${b.name}: ${bytes} bytes exceeds max_frame_bytes ${limits.max_frame_bytes}`, ref);
    total += bytes;
  }
  if (total > limits.max_message_bytes) fail('E_TOO_LARGE', `buffers total ${total} bytes exceeds max_message_bytes ${limits.max_message_bytes}`, ref);
  // A sketch step's tokens/n_seqs count every rank's data but its size is fixed (docs/sketch.md).
  if (isStep && h.sketch !== true) {
    for (const f of ['tokens', 'n_seqs'] as const)
      if ((h[f] as number) > limits.max_tokens_per_step)
        fail('E_TOO_LARGE', `${f} ${h[f]} exceeds max_tokens_per_step ${limits.max_tokens_per_step}`, ref);
  }
}
