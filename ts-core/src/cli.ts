#!/usr/bin/env node
// `tailguard` command line. Each subcommand lives in commands/<name>.ts and is imported lazily,
// so `tailguard --help` stays fast and a broken optional part cannot break the others.
import { Command, Option } from 'commander';
import { VERSION } from './version.ts';
import { availableParallelism } from 'node:os';
import { defaultIngestWorkers, int, port, positive, USAGE_EXIT } from './commands/options.ts';

const program = new Command();
program
  .name('tailguard')
  .description('Slice-aware tail diagnostics and control for RL post-training of tool-using LLM agents')
  .version(VERSION)
  // Usage errors (a bad option value included) exit 2, the convention for "you called it wrong".
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : USAGE_EXIT));

program
  .command('serve')
  .description('run the engine: a ZeroMQ ROUTER that trainers (all ranks, many runs) connect to')
  .option('--endpoint <addr>', 'ZeroMQ endpoint to bind', process.env.TAILGUARD_ENDPOINT ?? 'tcp://127.0.0.1:5599')
  .option('--run-dir <dir>', 'root directory for run stores (one subdirectory per run id)', process.env.TAILGUARD_RUN_DIR ?? 'runs')
  .addOption(new Option('--log-level <level>', 'pino log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default(process.env.TAILGUARD_LOG_LEVEL ?? 'info'))
  .option('--policy <file>', 'policy file (YAML or JSON) overriding the default policy')
  .option('--window <steps>', 'rolling window length W in steps', int(1), 20)
  .option('--step-timeout <ms>', 'finalise a step after this long even if ranks are missing', int(1), 30000)
  .option('--ui [port]', 'serve the live dashboard on 127.0.0.1:PORT (default 7860)', port)
  .option('--ui-host <host>', 'dashboard bind address (non-loopback needs --ui-token)', '127.0.0.1')
  .option('--ui-token <token>', 'required for a non-loopback --ui-host: pages are opened with ?token=TOKEN (env TAILGUARD_UI_TOKEN)')
  .option('--curve-secret <file>', 'server CURVE secret key file (from `tailguard keygen`)')
  .option('--curve-allow <file>', 'file of allowed client CURVE public keys, one per line')
  .option('--insecure', 'allow binding a non-loopback address without CURVE (loud warning)')
  .option('--record <file>', 'also write every received step message to a recording')
  .option('--parent-pid <pid>', 'exit when this process is gone (used by the embedded engine)', int(1))
  .option('--ready-file <file>', 'write the bound endpoint to this file once listening')
  .option('--delay-ms <ms>', 'testing: delay each reply by this long (simulates a slow engine)', int(0))
  .option('--state-every <steps>', 'replace state.json (resume state) every this many steps, and after each directive, ack, checkpoint, bye and at shutdown', int(1), 10)
  .option('--max-runs <n>', 'open runs at most; a hello for a new run beyond it closes an idle run or gets E_LIMIT', int(1), 64)
  .option('--run-idle-ms <ms>', 'a run whose ranks are still connected counts as idle (closable by --max-runs) after this long without a message', int(0), 300000)
  .option('--max-runs-per-conn <n>', 'runs one connection may hold sessions in; a hello for one more gets E_LIMIT', int(1), 8)
  .option('--max-pending-bytes <bytes>', 'memory budget for incomplete steps over all runs (E_BUDGET beyond)', int(1), 2 * 1024 ** 3)
  .option('--max-run-pending-bytes <bytes>', 'memory budget for incomplete steps of one run (E_BUDGET beyond)', int(1), 1024 ** 3)
  .option('--retain-runs <n>', 'keep only the N most recently updated run directories (0: all)', int(0), 0)
  .option('--retain-days <days>', 'remove run directories not updated for this many days (default: never)', positive)
  .option('--ingest-workers <n>', `worker threads for the per-token statistics, ranks of a step in parallel (0: on the main thread; default: one per core up to 8, 0 on one core; here ${defaultIngestWorkers(availableParallelism())})`, int(0, 64))
  .addOption(new Option('--commit <mode>', 'sync: a reply waits for its step\'s fsync; async: fsyncs leave the reply path and recorded_through trails the replies').choices(['sync', 'async']).default('sync'))
  .action(async (opts) => (await import('./commands/serve.ts')).serve(opts));

program
  .command('report <runDir> [otherRunDir]')
  .description('write a self-contained HTML report of a run directory; with two, overlay them (e.g. observe vs control)')
  .option('-o, --out <file>', 'output HTML file (default RUN_DIR/report.html, or compare-A-B.html beside A)')
  .action(async (runDir, other, opts) => (await import('./commands/report.ts')).report(runDir, other, opts));

program
  .command('ui')
  .description('serve the live page over a run store root, in its own process (the engine keeps its CPU)')
  .option('--run-dir <dir>', 'root directory of the run stores', process.env.TAILGUARD_RUN_DIR ?? 'runs')
  .option('--port <port>', 'port (0: any free port)', '7860')
  .option('--host <host>', 'bind address (non-loopback needs --token)', '127.0.0.1')
  .option('--token <token>', 'access token, required for a non-loopback --host (env TAILGUARD_UI_TOKEN)')
  .addOption(new Option('--log-level <level>', 'pino log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'))
  .action(async (opts) => (await import('./commands/ui.ts')).ui(opts));

program
  .command('replay <recording>')
  .description('re-run the engine over a recording at full speed (tune a policy offline)')
  .option('--policy <file>', 'policy file (YAML or JSON)')
  .option('--run-dir <dir>', 'write the replayed run store here')
  .option('--window <steps>', 'rolling window length W in steps', int(1), 20)
  .option('--step-timeout <ms>', 'finalise a step this long (recording clock) after its first rank even if ranks are missing', int(1), 30000)
  .option('--force', 'replace an existing run directory of the same run id')
  .action(async (recording, opts) => (await import('./commands/replay.ts')).replay(recording, opts));

program
  .command('doctor')
  .description('check the setup: Node.js, zeromq, endpoint reachability, the Python side')
  .option('--endpoint <addr>', 'engine endpoint to probe')
  .option('--python [exe]', 'also check that `import tailguard` works in this Python')
  .option('--timeout-ms <ms>', 'endpoint probe timeout', int(1), 3000)
  .action(async (opts) => (await import('./commands/doctor.ts')).doctor(opts));

program
  .command('keygen')
  .description('write a CURVE key pair (NAME.key secret, NAME.pub public)')
  .option('--out <prefix>', 'file prefix', 'tailguard')
  .action(async (opts) => (await import('./commands/keygen.ts')).keygen(opts));

await program.parseAsync(process.argv);
