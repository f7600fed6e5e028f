// `tailguard` command line. Each subcommand lives in commands/<name>.ts and is imported lazily,
// so `tailguard --help` stays fast and a broken optional part cannot break the others.
import { Command, Option } from 'commander';
import { VERSION } from './version.ts';

const program = new Command();
program
  .name('tailguard')
  .description('Slice-aware tail diagnostics and control for RL post-training of tool-using LLM agents')
  .version(VERSION);

program
  .command('serve')
  .description('run the engine: a ZeroMQ ROUTER that trainers (all ranks, many runs) connect to')
  .option('--endpoint <addr>', 'ZeroMQ endpoint to bind', process.env.TAILGUARD_ENDPOINT ?? 'tcp://127.0.0.1:5599')
  .option('--run-dir <dir>', 'root directory for run stores (one subdirectory per run id)', process.env.TAILGUARD_RUN_DIR ?? 'runs')
  .addOption(new Option('--log-level <level>', 'pino log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default(process.env.TAILGUARD_LOG_LEVEL ?? 'info'))
  .option('--policy <file>', 'policy file (YAML or JSON) overriding the default policy')
  .option('--window <steps>', 'rolling window length W in steps', '20')
  .option('--step-timeout <ms>', 'finalise a step after this long even if ranks are missing', '30000')
  .option('--ui [port]', 'serve the live dashboard on 127.0.0.1:PORT (default 7860)')
  .option('--ui-host <host>', 'dashboard bind address (non-loopback needs --ui-token)', '127.0.0.1')
  .option('--ui-token <token>', 'required for a non-loopback --ui-host: pages are opened with ?token=TOKEN (env TAILGUARD_UI_TOKEN)')
  .option('--curve-secret <file>', 'server CURVE secret key file (from `tailguard keygen`)')
  .option('--curve-allow <file>', 'file of allowed client CURVE public keys, one per line')
  .option('--insecure', 'allow binding a non-loopback address without CURVE (loud warning)')
  .option('--record <file>', 'also write every received step message to a capture file')
  .option('--parent-pid <pid>', 'exit when this process is gone (used by the embedded engine)')
  .option('--ready-file <file>', 'write the bound endpoint to this file once listening')
  .option('--delay-ms <ms>', 'testing: delay each reply by this long (simulates a slow engine)')
  .option('--state-every <steps>', 'replace state.json (resume state) every this many steps, and after each directive, ack, checkpoint and at shutdown', '10')
  .option('--max-runs <n>', 'open runs at most; a hello for a new run beyond it closes an idle run or gets E_LIMIT', '64')
  .option('--run-idle-ms <ms>', 'a run whose ranks are still connected counts as idle (closable by --max-runs) after this long without a message', '300000')
  .action(async (opts) => (await import('./commands/serve.ts')).serve(opts));

program
  .command('report <runDir>')
  .description('write a self-contained HTML report of a run directory')
  .option('-o, --out <file>', 'output HTML file (default RUN_DIR/report.html)')
  .action(async (runDir, opts) => (await import('./commands/report.ts')).report(runDir, opts));

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
  .command('replay <capture>')
  .description('re-run the engine over a capture file at full speed (tune a policy offline)')
  .option('--policy <file>', 'policy file (YAML or JSON)')
  .option('--run-dir <dir>', 'write the replayed run store here')
  .option('--window <steps>', 'rolling window length W in steps', '20')
  .option('--step-timeout <ms>', 'finalise a step this long (capture clock) after its first rank even if ranks are missing', '30000')
  .option('--force', 'replace an existing run directory of the same run id')
  .action(async (capture, opts) => (await import('./commands/replay.ts')).replay(capture, opts));

program
  .command('doctor')
  .description('check the setup: Node.js, zeromq, endpoint reachability, the Python side')
  .option('--endpoint <addr>', 'engine endpoint to probe')
  .option('--python [exe]', 'also check that `import tailguard` works in this Python')
  .option('--timeout-ms <ms>', 'endpoint probe timeout', (v) => Number(v), 3000)
  .action(async (opts) => (await import('./commands/doctor.ts')).doctor(opts));

program
  .command('keygen')
  .description('write a CURVE key pair (NAME.key secret, NAME.pub public)')
  .option('--out <prefix>', 'file prefix', 'tailguard')
  .action(async (opts) => (await import('./commands/keygen.ts')).keygen(opts));

await program.parseAsync(process.argv);
