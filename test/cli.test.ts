/**
 * The command line's flag spelling: `--help` of every command and commander's own messages name
 * flags in snake_case, as the README writes them; a usage error is bad input (exit 2).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { buildProgram } from '../lib/cli';
import { normalizeFlags, snakeCaseFlags } from '../lib/cli-flags';
import { REPO_ROOT, CLI } from './helpers';

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Long flags in a text (`--train_steps`, `--no_progress_bar`, `--train-steps`). */
function longFlags(text: string): string[] {
  return [...text.matchAll(/(?<![\w-])--[a-z][a-z0-9_-]*/g)].map((m) => m[0]);
}

test('snakeCaseFlags and normalizeFlags are inverses on flags and touch nothing else', () => {
  assert.equal(snakeCaseFlags("error: required option '--train-steps <n>' not specified"), "error: required option '--train_steps <n>' not specified");
  assert.equal(snakeCaseFlags('--no-progress-bar, --json, -f, --parameters-file <file>'), '--no_progress_bar, --json, -f, --parameters_file <file>');
  assert.equal(snakeCaseFlags('a path like /tmp/x--y-z and a value "a-b"'), 'a path like /tmp/x--y-z and a value "a-b"');
  assert.deepEqual(normalizeFlags(['--train_steps', '5', '--data_dir=a_b', '-p', 'train_steps', '1']), ['--train-steps', '5', '--data-dir=a_b', '-p', 'train_steps', '1']);
});

test('--help of every command writes its flags in snake_case, and every flag the README shows is in its command\'s help', () => {
  const program = buildProgram();
  const helps = new Map<string, string>();
  for (const cmd of program.commands) {
    const help = cmd.helpInformation();
    helps.set(cmd.name(), help);
    const kebab = longFlags(help).filter((f) => f.slice(2).includes('-'));
    assert.deepEqual(kebab, [], `imgclass ${cmd.name()} --help`);
  }
  const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const block = /## The command line[\s\S]*?```bash\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'the README has a command-line block');
  const commands = block.replace(/\\\n/g, ' ').split('\n').filter((l) => l.startsWith('imgclass '));
  assert.ok(commands.length >= 8, `${commands.length} commands in the README block`);
  for (const line of commands) {
    const name = line.split(/\s+/)[1]!;
    const help = helps.get(name);
    assert.ok(help, `the README shows "imgclass ${name}", which is not a command`);
    for (const flag of longFlags(line.replace(/#.*$/, ''))) {
      assert.ok(help.includes(`${flag} `) || help.includes(`${flag},`), `README: imgclass ${name} ${flag} is not in its --help`);
    }
  }
});

test('commander\'s messages name flags as the README does, and exit 2: required, unknown, invalid, missing', () => {
  const cases: [string[], RegExp][] = [
    [['train', '--data_dir', 'd', '--model_dir', 'm'], /^error: required option '--train_steps <n>' not specified$/m],
    [['preprocess', '--train_csv', 'a', '--validation-csv', 'b', '--labels_file', 'c', '--output_dir', 'o', '--num_shards', 'x'], /^error: option '--num_shards <n>' argument 'x' is invalid\. expected a whole number ≥ 1, got "x"$/m],
    [['make-dataset', '--output_dir'], /^error: option '--output_dir <dir>' argument missing$/m],
    [['serve', '--model_dir', 'm', '--max_bach', '3'], /^error: unknown option '--max_bach'\n\(Did you mean --max_batch\?\)$/m],
    [['run-notebook', 'in.ipynb', 'out.ipynb', '--start_timeout', '-1'], /^error: option '--start_timeout <s>' argument '-1' is invalid/m],
    [['run-notebook', 'in.ipynb', 'out.ipynb', '--parameters_raw', 'n'], /^imgclass: --parameters_raw needs two values: --parameters_raw NAME VALUE$/m],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `imgclass ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, `imgclass ${args.join(' ')}`);
    const kebab = longFlags(r.stderr).filter((f) => f.slice(2).includes('-'));
    assert.deepEqual(kebab, [], `imgclass ${args.join(' ')}: the message and the help after it`);
  }
  const help = cli(['train', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^ {2}--train_steps <n> /m);
});
