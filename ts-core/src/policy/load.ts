// Policy loading: the shipped default, deep-merged with a user file (YAML or JSON) or object,
// validated against schema.json. Errors name the key, the expected type and what was given.
import { readFileSync } from 'node:fs';
import { Ajv2019 } from 'ajv/dist/2019.js';
import type { ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import type { Policy, PolicyOverride } from './types.ts';

import schema from './schema.json' with { type: 'json' };

// esbuild defines this in the bundled engine (scripts/build-engine.mjs), which carries policy/ beside itself.
declare const __TAILGUARD_BUNDLED__: boolean | undefined;
export const DEFAULT_POLICY_FILE =
  typeof __TAILGUARD_BUNDLED__ !== 'undefined' ? new URL('./policy/default.yaml', import.meta.url) : new URL('../../policy/default.yaml', import.meta.url);

export type PolicyErrorCode = 'E_POLICY_READ' | 'E_POLICY_PARSE' | 'E_POLICY_INVALID';

export class PolicyError extends Error {
  override name = 'PolicyError';
  constructor(
    readonly code: PolicyErrorCode,
    message: string,
    readonly errors: string[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const ajv = new Ajv2019({ allErrors: true, strict: false });
const validate = ajv.compile(schema as object); // untyped: the JSON import's literal type is not the Policy type

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Maps merge key by key; lists, scalars and null replace. */
export function deepMerge<T>(base: T, over: unknown): T {
  if (!isPlainObject(base) || !isPlainObject(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? deepMerge(out[k], v) : v;
  return out as T;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'string') return `string ${JSON.stringify(v).slice(0, 40)}`;
  if (typeof v === 'object') return 'object';
  return `${typeof v} ${String(v)}`;
}

function valueAt(root: unknown, pointer: string): unknown {
  let cur: any = root;
  for (const part of pointer.split('/').slice(1)) cur = cur?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  return cur;
}

function formatError(e: ErrorObject, root: unknown, source: string): string | null {
  const at = e.instancePath.split('/').slice(1).join('.') || '(root)';
  const got = describe(valueAt(root, e.instancePath));
  switch (e.keyword) {
    case 'additionalProperties':
    case 'unevaluatedProperties': {
      const key = (e.params as any).additionalProperty ?? (e.params as any).unevaluatedProperty;
      return `${source}: ${at === '(root)' ? key : `${at}.${key}`}: unknown key`;
    }
    case 'type':
      return `${source}: ${at}: expected ${String((e.params as any).type).split(',').join(' or ')}, got ${got}`;
    case 'enum':
      return `${source}: ${at}: expected one of ${(e.params as any).allowedValues.map((x: unknown) => JSON.stringify(x)).join(', ')}, got ${got}`;
    case 'required':
      return `${source}: ${at === '(root)' ? '' : `${at}.`}${(e.params as any).missingProperty}: required`;
    case 'allOf':
    case 'if':
      return null; // the inner error says it better
    default:
      return `${source}: ${at}: ${e.message}, got ${got}`;
  }
}

/** Validates a complete policy object; throws E_POLICY_INVALID listing every problem. */
export function validatePolicy(p: unknown, source = 'policy'): Policy {
  if (validate(p)) return p as Policy;
  const errs = [...new Set((validate.errors ?? []).map((e) => formatError(e, p, source)).filter((x): x is string => !!x))];
  throw new PolicyError('E_POLICY_INVALID', `invalid policy:\n  ${errs.join('\n  ')}`, errs);
}

function parseFile(file: string | URL): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PolicyError('E_POLICY_READ', `cannot read policy file ${String(file)}: ${(err as Error).message}`, [], { cause: err });
  }
  try {
    // YAML 1.2 is a superset of JSON, so one parser reads both.
    const v = parseYaml(text);
    if (v === null || v === undefined) return {};
    if (!isPlainObject(v)) throw new Error(`top level must be a map, got ${describe(v)}`);
    return v;
  } catch (err) {
    throw new PolicyError('E_POLICY_PARSE', `cannot parse policy file ${String(file)}: ${(err as Error).message}`, [], { cause: err });
  }
}

export function defaultPolicy(): Policy {
  return validatePolicy(parseFile(DEFAULT_POLICY_FILE), 'default policy');
}

/** The default policy, with `file` (YAML/JSON) and then `override` merged over it, validated. */
export function loadPolicy(file?: string, override?: PolicyOverride): Policy {
  let p: unknown = parseFile(DEFAULT_POLICY_FILE);
  if (file) {
    const user = parseFile(file);
    p = deepMerge(p, user);
    // Validate the user file's own keys first, so errors name the file.
    validatePolicy(p, file);
  }
  if (override) p = deepMerge(p, override);
  return validatePolicy(p, file ? `${file} (+override)` : 'policy');
}
