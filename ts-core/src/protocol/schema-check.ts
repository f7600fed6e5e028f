// The ordered walk over a proto/v1 schema that names the FIRST failure with its stable code
// (proto/README.md "Validation order", B5/B6). ajv answers "valid?" fast; this walk runs only when it
// says no, so every runner reports the same code. python-shim wire/schema_check.py is the same walk.
import { ProtocolError, type ErrorCode, type ErrorRef } from './errors.ts';
import type { Schema } from './schemas.ts';

type H = Record<string, unknown>;
export const isMap = (v: unknown): v is H => typeof v === 'object' && v !== null && !Array.isArray(v);

export function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : Number.isInteger(v) ? `int ${v}` : `float ${v}`;
  if (typeof v === 'string') return `str ${JSON.stringify(v.slice(0, 40))}`;
  return typeof v === 'object' ? 'map' : typeof v;
}

const fail = (code: ErrorCode, msg: string, ref: ErrorRef): never => {
  throw new ProtocolError(code, msg, { ref });
};

const IS: Record<string, (v: unknown) => boolean> = {
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === 'number',
  string: (v) => typeof v === 'string',
  boolean: (v) => typeof v === 'boolean',
  null: (v) => v === null,
  object: isMap,
  array: Array.isArray,
};
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** "a non-negative integer", "a number or nil": what a schema wants, in words. */
export function wants(s: Schema): string {
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  const word = (t: string): string => {
    if (t === 'integer' && s.maximum === MAX_SAFE) return s.minimum === 0 ? 'a non-negative integer' : s.minimum === 1 ? 'a positive integer' : 'an integer';
    if (t === 'integer') return s.maximum !== undefined ? `an integer in [${s.minimum ?? '-inf'}, ${s.maximum}]` : 'an integer';
    if (t === 'number') return s.maximum !== undefined ? 'a finite number' : 'a number';
    return { string: 'a string', boolean: 'a boolean', null: 'nil', object: 'a map', array: 'an array' }[t] ?? t;
  };
  return types.map(word).join(' or ');
}

const patterns = new Map<string, RegExp>();
const regex = (p: string) => patterns.get(p) ?? patterns.set(p, new RegExp(p)).get(p)!;

/** Check one value against a schema; throws the first failure as a ProtocolError. */
export function checkValue(s: Schema, v: unknown, path: string, ref: ErrorRef): void {
  const alts = s.oneOf ?? s.anyOf;
  if (alts) {
    // proto/v1 uses oneOf/anyOf only as "nil or X": nil passes the nil branch, anything else is checked against X.
    if (v === null && alts.some((b) => b.type === 'null')) return;
    const nonNull = alts.filter((b) => b.type !== 'null');
    for (const b of nonNull.slice(0, -1)) if (matches(b, v)) return;
    return checkValue(nonNull[nonNull.length - 1], v, path, ref);
  }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => IS[t](v))) fail('E_FIELD_TYPE', `${path} must be ${wants(s)}, got ${describe(v)}`, ref);
    if (v === null) return;
  }
  if (s.const !== undefined && JSON.stringify(s.const) !== JSON.stringify(v))
    fail('E_FIELD_TYPE', `${path} must be ${JSON.stringify(s.const)}, got ${describe(v)}`, ref);
  if (s.enum && !s.enum.includes(v)) fail('E_FIELD_TYPE', `${path} must be one of ${s.enum.join('|')}, got ${describe(v)}`, ref);
  const bounded = s.minimum !== undefined || s.maximum !== undefined; // bounds exclude NaN (as in ajv)
  if (typeof v === 'number' && bounded && (Number.isNaN(v) || v < (s.minimum ?? -Infinity) || v > (s.maximum ?? Infinity)))
    fail('E_FIELD_TYPE', `${path} must be ${wants(s) || 'in range'}, got ${describe(v)}`, ref);
  if (typeof v === 'string' && s.pattern && !regex(s.pattern).test(v)) {
    if (path === 'run_id') fail('E_RUN_ID', `run_id ${JSON.stringify(v)} does not match ${s.pattern}`, ref);
    fail('E_FIELD_TYPE', `${path} ${JSON.stringify(v.slice(0, 40))} does not match ${s.pattern}`, ref);
  }
  if (Array.isArray(v)) checkArray(s, v, path, ref);
  else if (isMap(v) && (s.properties || s.required || s.additionalProperties !== undefined)) checkObject(s, v, `${path}.`, ref);
}

function checkArray(s: Schema, v: unknown[], path: string, ref: ErrorRef): void {
  if ((s.minItems !== undefined && v.length < s.minItems) || (s.maxItems !== undefined && v.length > s.maxItems))
    fail('E_FIELD_TYPE', `${path} must have ${s.minItems ?? 0}..${s.maxItems ?? 'any'} items, got ${v.length}`, ref);
  if (Array.isArray(s.items)) s.items.forEach((it, i) => i < v.length && checkValue(it, v[i], `${path}[${i}]`, ref));
  else if (s.items) for (let i = 0; i < v.length; i++) checkValue(s.items, v[i], `${path}[${i}]`, ref);
}

/** Does `v` satisfy `s`? (for `if` and for the non-last branches of oneOf) */
export function matches(s: Schema, v: unknown): boolean {
  try {
    checkValue(s, v, '', {});
    return true;
  } catch {
    return false;
  }
}

type Field = readonly [name: string, required: boolean, schema: Schema];
const orders = new WeakMap<Schema, Field[]>();

/**
 * Fields in check order ("the type's fields in table order"): the chosen if/then/else branch's `required`,
 * then the schema's own `required`, then the other `properties`, each in file order.
 */
function fieldOrder(base: Schema, branch: Schema | undefined): Field[] {
  const key = branch ?? base;
  let out = orders.get(key);
  if (out) return out;
  const props = { ...base.properties, ...branch?.properties };
  const req = [...(branch?.required ?? []), ...(base.required ?? [])];
  const names = [...new Set([...req, ...Object.keys(props)])].filter((n) => props[n] !== undefined || req.includes(n));
  out = names.map((n) => [n, req.includes(n), props[n] ?? {}] as const);
  orders.set(key, out);
  return out;
}

/** An object's fields in order: missing and required → E_MISSING_FIELD; else the field's own schema. */
export function checkObject(s: Schema, h: H, prefix: string, ref: ErrorRef): void {
  const branch = s.if ? (matches(s.if, h) ? s.then : s.else) : undefined;
  for (const [name, required, sub] of fieldOrder(s, branch)) {
    const v = Object.hasOwn(h, name) ? h[name] : undefined;
    if (v === undefined) {
      if (required) fail('E_MISSING_FIELD', `missing required field ${prefix}${name}`, ref);
      continue;
    }
    checkValue(sub, v, prefix + name, ref);
  }
  const extra = s.additionalProperties;
  if (typeof extra === 'object') {
    const known = s.properties ?? {};
    for (const [k, x] of Object.entries(h)) if (!Object.hasOwn(known, k)) checkValue(extra, x, prefix + k, ref);
  }
}
