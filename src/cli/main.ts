#!/usr/bin/env node
/**
 * converge's command line. Each command's module is imported only when that
 * command runs, so that `converge --help` and `converge validate` start fast.
 * Every command returns an exit code; errors reach the one handler below.
 */
import { Command, CommanderError, Option } from 'commander';
import { createRequire } from 'node:module';
import { handleError, EXIT } from './exit.js';

// grpc (under etcd3) warns on every TLS connection to an IP address; the
// warning is about Node's future behaviour, not something an operator can act on.
process.noDeprecation = true;

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

const out = (s: string): void => {
  process.stdout.write(s);
};
const err = (s: string): void => {
  process.stderr.write(s);
};

type Flags = Record<string, unknown>;

/** Options every command that talks to nodes accepts; they override env and the config file. */
function withConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--repo <dir|url>', 'desired state: a directory, a local Git repository or a Git URL')
    .option('--branch <name>', 'Git branch to follow (with a Git --repo)')
    .option('--path <dir>', 'folder of the desired state inside the Git repository')
    .option('--secrets <dir>', 'secrets directory (TLS keys and certificates)')
    .option('--artifacts <dir>', 'artifacts directory (binaries pinned by sha256)')
    .option('--ssh-key <file>', 'SSH private key (default: ssh-agent via SSH_AUTH_SOCK)')
    .option('--known-hosts <file>', 'known_hosts file for strict host key checking')
    .option('--parallel <n>', 'nodes handled at once', (v) => Number.parseInt(v, 10))
    .option('--nodes <names>', 'only these nodes (comma-separated)')
    .option('--config <file>', 'config file (default .converge/config.json)')
    .option('--skip-etcd', 'host resources only: leave the etcd member set and etcd restarts alone')
    .option('--insecure-trust-on-first-use', 'accept (and record) the host key of a node not yet in known_hosts; a changed key is still refused')
    .option('--stats', 'print connections, round trips and timings per node on stderr');
}

async function main(argv: string[]): Promise<number> {
  const program = new Command('converge')
    .description('GitOps reconciler for Linux nodes and the etcd cluster they run')
    .version(version, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: err });

  let code: number = EXIT.ok;
  const run = (fn: (flags: Flags, ...args: string[]) => Promise<number>) =>
    async (...args: unknown[]): Promise<void> => {
      const cmd = args[args.length - 1] as Command;
      const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
      code = await fn(cmd.optsWithGlobals(), ...positional);
    };

  program
    .command('validate')
    .description('load and validate the desired state (exit 0 valid, 1 invalid)')
    .option('--repo <dir>', 'desired-state directory')
    .option('--config <file>', 'config file')
    .option('--json', 'machine-readable output')
    .action(run(async (flags) => (await import('./commands.js')).validate(flags, out)));

  withConnectionOptions(program.command('plan'))
    .description('dry-run: what would change, with diffs (exit 0 none, 2 pending, 1 error)')
    .option('--json', 'print the plan as JSON')
    .option('--out <file>', 'save the plan for `converge apply FILE`')
    .action(run(async (flags) => (await import('./commands.js')).plan(flags, out)));

  withConnectionOptions(program.command('apply'))
    .argument('[plan.json]', 'a plan saved by `converge plan --out` (refused when stale)')
    .description('apply the differences, rolling and health-gated (exit 0 converged, 1 error)')
    .option('--json', 'print the result as JSON')
    .action(run(async (flags, planFile) => (await import('./commands.js')).apply(flags, planFile, out)));

  withConnectionOptions(program.command('drift'))
    .description('where the nodes differ from the last applied commit (exit 0 none, 2 drift, 1 error)')
    .option('--json', 'JSON output')
    .option('--markdown', 'Markdown output (for a pull request or a ticket)')
    .action(run(async (flags) => (await import('./commands.js')).drift(flags, out)));

  withConnectionOptions(program.command('status'))
    .description('nodes, services and etcd members (exit 0 healthy, 1 not)')
    .option('--json', 'JSON output')
    .action(run(async (flags) => (await import('./commands.js')).status(flags, out)));

  withConnectionOptions(program.command('watch'))
    .description('the daemon: follow a branch and reconcile every commit')
    .option('--interval <seconds>', 'poll interval', (v) => Number.parseFloat(v))
    .addOption(new Option('--mode <mode>', 'enforce: correct drift; report: only report it').choices(['enforce', 'report']))
    .option('--listen <addr:port>', 'status/metrics/webhook address (default 127.0.0.1:9479)')
    .option('--webhook-secret-file <file>', 'shared secret for POST /hooks/git (no secret, no webhook)')
    .option('--rollback', 'return a node that fails a health gate to the last good commit')
    .option('--coordination <urls>', 'etcd client URLs to elect one leader among several watchers (TLS: etcdCa/etcdCert/etcdKey)')
    .option('--lease-ttl <seconds>', 'leadership lease TTL with --coordination (default 10)')
    .option('--cache <dir>', 'where Git clones are cached')
    .option('--state-dir <dir>', 'where the daemon keeps its state (default $STATE_DIRECTORY or .converge)')
    .option('--webhook-listen <addr:port>', 'a separate address for POST /hooks/git only')
    .option('--git-token-file <file>', 'file holding the Git token (never printed)')
    .option('--log-level <level>', 'pino log level (info, debug, …)')
    .action(run(async (flags) => (await import('./commands.js')).watch(flags, out)));

  program
    .command('config')
    .description('print the effective settings and where each came from')
    .option('--config <file>', 'config file')
    .option('--json', 'JSON output')
    .action(run(async (flags) => (await import('./commands.js')).config(flags, out)));

  const lab = program.command('lab').description('the local lab of test nodes (needs root)');
  lab
    .command('up')
    .description('boot the lab nodes, PKI, artifacts and Git server')
    .option('--nodes <names>', 'comma-separated node names (default cp-a,cp-b,cp-c)')
    .action(run(async (flags) => (await import('./commands.js')).lab('up', flags, [], out)));
  lab
    .command('down')
    .description('stop everything the lab started and remove the bridge')
    .option('--purge', 'also delete the lab directory (keys, PKI, Git repository); the node image cache stays')
    .action(run(async (flags) => (await import('./commands.js')).lab('down', flags, [], out)));
  lab
    .command('status')
    .description('list nodes and whether each answers SSH')
    .option('--json', 'JSON output')
    .action(run(async (flags) => (await import('./commands.js')).lab('status', flags, [], out)));
  lab
    .command('reset')
    .argument('<node>', 'node to give a fresh image')
    .description('give a node a fresh image')
    .action(run(async (flags, node) => (await import('./commands.js')).lab('reset', flags, node ? [node] : [], out)));

  program
    .command('demo')
    .description('what `npm start` runs: lab up, reconcile desired-state/ into it, show the cluster')
    .action(run(async (flags) => (await import('./commands.js')).demo(flags, out)));

  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.error;
    throw e;
  }
  return code;
}

// Exit explicitly: a client library's idle socket must not keep a finished
// command alive (stdout and stderr are synchronous on Linux, nothing is lost).
main(process.argv).then(
  (code) => process.exit(code),
  (e: unknown) => process.exit(handleError(e, err)),
);
