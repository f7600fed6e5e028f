// `tailguard doctor`: checks the setup and prints one table. Non-zero exit when any check fails.
import { spawnSync } from 'node:child_process';
import { VERSION, PROTOCOL_VERSION } from '../version.ts';

export interface Check {
  check: string;
  ok: boolean;
  detail: string;
  /** A failure that does not fail the run (e.g. optional CURVE support). */
  optional?: boolean;
}

export interface DoctorOptions {
  endpoint?: string;
  python?: string | boolean;
  /** Probe timeout in ms (tests shorten it). */
  timeoutMs?: number;
}

const MIN_NODE_MAJOR = 20;
const PROBE_RUN_ID = 'tailguard-doctor';

export async function runChecks(opts: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  const major = Number(process.versions.node.split('.')[0]);
  checks.push({ check: 'node', ok: major >= MIN_NODE_MAJOR, detail: `${process.version} (need >= ${MIN_NODE_MAJOR}); tailguard ${VERSION}, protocol ${PROTOCOL_VERSION.join('.')}` });

  let zmq: typeof import('zeromq') | null = null;
  try {
    zmq = await import('zeromq');
    checks.push({ check: 'zeromq', ok: true, detail: `zeromq.js loads, libzmq ${zmq.version}` });
  } catch (e) {
    checks.push({ check: 'zeromq', ok: false, detail: `cannot load zeromq: ${(e as Error).message} (run \`npm ci\`)` });
  }
  if (zmq) {
    let curve = false;
    let why = 'libzmq built without CURVE';
    try {
      curve = !!zmq.capability.curve && zmq.curveKeyPair().publicKey.length === 40;
    } catch (e) {
      why = (e as Error).message;
    }
    checks.push({ check: 'zeromq curve', ok: curve, optional: true, detail: curve ? 'CURVE available (non-loopback binds can be encrypted)' : `${why}: only loopback or --insecure binds` });
  }
  try {
    await import('msgpackr');
    checks.push({ check: 'msgpackr', ok: true, detail: 'loads' });
  } catch (e) {
    checks.push({ check: 'msgpackr', ok: false, detail: (e as Error).message });
  }
  if (opts.endpoint && zmq) checks.push(await probeEndpoint(zmq, opts.endpoint, opts.timeoutMs ?? 3000));
  if (opts.python !== undefined && opts.python !== false) {
    const exe = typeof opts.python === 'string' ? opts.python : (process.env.TAILGUARD_PYTHON ?? 'python3');
    checks.push(checkPython(exe));
  }
  return checks;
}

/** Connect a DEALER, send hello, wait for welcome (or an error reply) within the timeout. */
async function probeEndpoint(zmq: typeof import('zeromq'), endpoint: string, timeoutMs: number): Promise<Check> {
  const { encodeHeader, decodeHeader } = await import('../protocol/index.ts');
  const sock = new zmq.Dealer({ linger: 0, receiveTimeout: timeoutMs, sendTimeout: timeoutMs });
  const t0 = performance.now();
  try {
    sock.connect(endpoint);
    const hello = { type: 'hello', version: [...PROTOCOL_VERSION], run_id: PROBE_RUN_ID, rank: 0, world_size: 1, trainer: 'synthetic', mode: 'raw', client: { name: 'tailguard-doctor', version: VERSION } };
    await sock.send(encodeHeader(hello));
    const [frame] = await sock.receive();
    const h = decodeHeader(frame);
    const ms = (performance.now() - t0).toFixed(0);
    if (h.type === 'welcome') {
      const engine = h.engine as { name?: string; version?: string } | undefined;
      await sock.send(encodeHeader({ type: 'bye', version: [...PROTOCOL_VERSION], run_id: PROBE_RUN_ID, rank: 0, last_step: 0, stats: { sent: 0, dropped: 0, reconnects: 0 } })).catch(() => {});
      return { check: 'endpoint', ok: true, detail: `${endpoint}: welcome from ${engine?.name ?? '?'} ${engine?.version ?? ''} in ${ms} ms` };
    }
    return { check: 'endpoint', ok: false, detail: `${endpoint}: answered ${String(h.type)} ${h.code ?? ''} ${h.message ?? ''}`.trim() };
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why = code === 'EAGAIN' ? `no reply within ${timeoutMs} ms (is \`tailguard serve\` running there?)` : (e as Error).message;
    return { check: 'endpoint', ok: false, detail: `${endpoint}: ${why}` };
  } finally {
    sock.close();
  }
}

function checkPython(exe: string): Check {
  const code = 'import sys, tailguard, zmq, msgpack, numpy; print(getattr(tailguard, "__version__", "?"), sys.version.split()[0], zmq.zmq_version())';
  const r = spawnSync(exe, ['-c', code], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return { check: 'python', ok: false, detail: `${exe}: ${r.error.message}` };
  if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').at(-1) ?? `exit ${r.status}`;
    return { check: 'python', ok: false, detail: `${exe}: ${last} (install the shim into this interpreter: pip install tailguard, or pip install -e . from a checkout)` };
  }
  const [tg, py, zv] = r.stdout.trim().split(' ');
  return { check: 'python', ok: true, detail: `${exe}: python ${py}, tailguard ${tg}, libzmq ${zv}` };
}

export function formatTable(checks: Check[]): string {
  const w = Math.max(...checks.map((c) => c.check.length), 5);
  const mark = (c: Check) => (c.ok ? 'ok  ' : c.optional ? 'warn' : 'FAIL');
  const lines = [`${'check'.padEnd(w)}  status  detail`, `${'-'.repeat(w)}  ------  ${'-'.repeat(40)}`];
  for (const c of checks) lines.push(`${c.check.padEnd(w)}  ${mark(c)}    ${c.detail}`);
  return lines.join('\n') + '\n';
}

export async function doctor(opts: DoctorOptions): Promise<void> {
  const checks = await runChecks(opts);
  process.stdout.write(formatTable(checks));
  const failed = checks.filter((c) => !c.ok && !c.optional);
  if (failed.length) {
    process.stdout.write(`\n${failed.length} check(s) failed: ${failed.map((c) => c.check).join(', ')}\n`);
    process.exitCode = 1;
  }
}
