/**
 * The headless notebook runner against a real tslab kernel (and, once, real Jupyter's nbconvert).
 * Kernel starts cost seconds, so each kernel run checks several things.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { runNotebook } from '../lib/runner';
import { translateValue, translateParameters } from '../lib/runner/translator';
import { findDeclarations, parameterizeNotebook, injectedSource } from '../lib/runner/parameterize';
import { parseNotebook, serializeNotebook, splitLines, type CodeCell, type Notebook } from '../lib/runner/notebook-io';
import { OutputRecorder, errorFromStderr, collapseCarriageReturns } from '../lib/runner/outputs';
import { KernelClient, findKernelSpec, projectTslabSpec, type JupyterMessage } from '../lib/runner/kernel-client';
import { resolveParameterValue, splitParameterArgs } from '../lib/runner/command';
import { UserError } from '../lib/errors';
import { setGcsClient } from '../lib/storage';
import { Storage } from '@google-cloud/storage';
import { FakeGcs } from './fake-gcs';

const dir = tempDir('imgclass-runner-');
after(() => removeDir(dir));

// --- notebook fixtures ------------------------------------------------------------------------------

type RawCell = Record<string, unknown>;
const code = (source: string, tags?: string[]): RawCell => ({
  cell_type: 'code',
  execution_count: null,
  metadata: tags ? { tags } : {},
  outputs: [],
  source,
});
const md = (source: string): RawCell => ({ cell_type: 'markdown', metadata: {}, source });

function writeNb(name: string, cells: RawCell[]): string {
  const p = path.join(dir, name);
  const nb = {
    nbformat: 4,
    nbformat_minor: 4,
    metadata: { kernelspec: { name: 'tslab', display_name: 'TypeScript', language: 'typescript' } },
    cells,
  };
  fs.writeFileSync(p, JSON.stringify(nb, null, 2));
  return p;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const readJson = (p: string): Json => JSON.parse(fs.readFileSync(p, 'utf8'));
const text = (v: string | string[]): string => (Array.isArray(v) ? v.join('') : v);
const tagged = (nb: Json, tag: string): Json[] => nb.cells.filter((c: Json) => (c.metadata.tags ?? []).includes(tag));
/** stdout text of a cell's outputs. */
const stdoutOf = (cell: Json): string =>
  cell.outputs.filter((o: Json) => o.output_type === 'stream' && o.name === 'stdout').map((o: Json) => text(o.text)).join('');

/** nbformat's own validation, and byte-for-byte Jupyter layout (nbformat.writes of what we wrote). */
function validateWithNbformat(...files: string[]): void {
  const script = [
    'import nbformat, sys',
    'for p in sys.argv[1:]:',
    '    text = open(p, encoding="utf-8").read()',
    '    nb = nbformat.reads(text, as_version=4)',
    '    nbformat.validate(nb)',
    '    again = nbformat.writes(nb)',
    '    again = again if again.endswith("\\n") else again + "\\n"',
    '    if again != text:',
    '        print("layout differs from nbformat.writes: " + p); sys.exit(3)',
  ].join('\n');
  const r = spawnSync('/usr/bin/python3', ['-c', script, ...files], { encoding: 'utf8' });
  assert.equal(r.status, 0, `nbformat validation failed:\n${r.stdout}\n${r.stderr}`);
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, cwd: dir });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr, seconds: (Date.now() - t0) / 1000 }));
  });
}

// --- pure parts --------------------------------------------------------------------------------------

test('translator: every JSON type, and non-finite numbers, become TypeScript that evaluates back to the value', () => {
  const values: unknown[] = [
    'plain',
    'quotes " and \' and `backticks` ${not} \\ back\nnew line\ttab \u2028 é 🙂',
    0,
    -12,
    3.25,
    -1e-7,
    1e21,
    true,
    false,
    null,
    [1, 'two', [3, [null]], { k: false }],
    { a: 1, 'needs quotes-here': { nested: ['x', -2.5] }, '': 'empty key' },
    [],
    {},
  ];
  for (const v of values) {
    const expr = translateValue(v);
    assert.deepEqual(new Function(`return (${expr});`)(), v, expr);
  }
  assert.ok(Number.isNaN(new Function(`return ${translateValue(NaN)}`)()));
  assert.equal(new Function(`return ${translateValue(-Infinity)}`)(), -Infinity);
  assert.ok(Object.is(new Function(`return ${translateValue(-0)}`)(), -0));
  assert.deepEqual(translateParameters({ n: 3, s: 'x' }, { n: 'number' }), ['let n: number = 3;', 'let s = "x";']);
  for (const bad of ['1x', 'a-b', 'let', 'class', '', 'a b']) {
    assert.throws(() => translateParameters({ [bad]: 1 }), UserError, bad);
  }
  assert.throws(() => translateValue(new Date()), UserError);
  assert.throws(() => translateValue(() => 1), UserError);
});

test('command line values are typed like papermill -p (and -r stays a string)', () => {
  assert.equal(resolveParameterValue('3'), 3);
  assert.equal(resolveParameterValue('-3'), -3);
  assert.equal(resolveParameterValue('2.5e-3'), 0.0025);
  assert.equal(resolveParameterValue('.5'), 0.5);
  assert.equal(resolveParameterValue('-inf'), -Infinity);
  assert.ok(Number.isNaN(resolveParameterValue('nan') as number));
  assert.equal(resolveParameterValue('true'), true);
  assert.equal(resolveParameterValue('False'), false);
  assert.equal(resolveParameterValue('None'), null);
  assert.equal(resolveParameterValue('abc'), 'abc');
  assert.equal(resolveParameterValue('3 apples'), '3 apples');
  assert.equal(resolveParameterValue('[1,2]'), '[1,2]');
  const s = splitParameterArgs(['-p', 'n', '-3', 'in.ipynb', '--parameters', 's', 'x', 'out.ipynb', '-r', 'r', '5']);
  assert.deepEqual(s, { positionals: ['in.ipynb', 'out.ipynb'], typed: [['n', '-3'], ['s', 'x']], raw: [['r', '5']] });
  assert.throws(() => splitParameterArgs(['in', 'out', '-p', 'n']), /two values/);
  assert.throws(() => splitParameterArgs(['in', 'out', '--bogus']), /unknown option/);
});

test('parameterize: finds declarations, injects after the parameters cell, replaces on re-runs, warns', () => {
  const decls = findDeclarations(
    [
      'let a = 1, b: string = "x;y = 2"; // let fake = 1',
      'const c: Record<string, number> = { x: 1,',
      '  y: 2 };',
      '/* var hidden = 3; */',
      'var d;',
      'function f() { let inner = 1; }',
      'let e: (x: number) => boolean = (x) => x > 1',
      'let g = `template ${a}`',
    ].join('\n'),
  );
  assert.deepEqual(
    decls.map((d) => [d.name, d.kind, d.type, d.initializer]),
    [
      ['a', 'let', undefined, '1'],
      ['b', 'let', 'string', '"x;y = 2"'],
      ['c', 'const', 'Record<string, number>', '{ x: 1,\n  y: 2 }'],
      ['d', 'var', undefined, undefined],
      ['e', 'let', '(x: number) => boolean', '(x) => x > 1'],
      ['g', 'let', undefined, '`template ${a}`'],
    ],
  );

  const nb = parseNotebook(
    JSON.stringify({
      nbformat: 4,
      nbformat_minor: 4,
      metadata: { papermill: { parameters: {}, default_parameters: {}, environment_variables: {}, version: 'x' } },
      cells: [md('# t'), code('let n: number = 1;\nconst s = "a";', ['parameters']), code('n')],
    }),
    'test.ipynb',
  );
  assert.equal(nb.nbformat_minor, 5);
  assert.ok(nb.cells.every((c) => typeof c.id === 'string' && c.id.length > 0));
  const first = parameterizeNotebook(nb, { n: 2, s: 'b', extra: true });
  assert.deepEqual(first.notebook.cells.map((c) => c.metadata.tags ?? []), [[], ['parameters'], ['injected-parameters'], []]);
  assert.equal(first.notebook.cells[2]!.source, '// Parameters\nlet n: number = 2;\nlet s = "b";\nlet extra = true;');
  assert.equal(first.warnings.length, 1);
  assert.match(first.warnings[0]!, /unknown parameter "extra"/);
  assert.deepEqual(first.notebook.metadata.papermill!.parameters, { n: 2, s: 'b', extra: true });

  const second = parameterizeNotebook(first.notebook, { n: 5 });
  assert.equal(second.notebook.cells.filter((c) => c.metadata.tags?.includes('injected-parameters')).length, 1);
  assert.equal(second.notebook.cells[2]!.source, injectedSource({ n: 5 }, second.declarations));
  assert.equal(second.notebook.cells.length, 4);
  assert.deepEqual(parameterizeNotebook(first.notebook, {}).notebook.cells, first.notebook.cells, 'no parameters: unchanged');

  const noParamCell = parseNotebook(JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [code('1')] }), 'x');
  const top = parameterizeNotebook(noParamCell, { k: 1 });
  assert.deepEqual(top.notebook.cells[0]!.metadata.tags, ['injected-parameters']);
  assert.match(top.warnings[0]!, /no cell tagged "parameters"/);
});

test('notebook-io: lines split and keys sorted as nbformat writes them; reading joins them back', () => {
  assert.deepEqual(splitLines('a\nb\r\nc\rd'), ['a\n', 'b\r\n', 'c\r', 'd']);
  assert.deepEqual(splitLines(''), []);
  const nb: Notebook = parseNotebook(
    JSON.stringify({
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { z: 1, a: { y: 2, b: 3 } },
      cells: [
        {
          id: 'c1',
          cell_type: 'code',
          execution_count: 1,
          metadata: { trusted: true },
          source: ['x\n', 'y'],
          outputs: [
            { output_type: 'stream', name: 'stdout', text: ['1\n', '2\n'] },
            { output_type: 'display_data', data: { 'text/html': ['<b>\n', '</b>'], 'application/json': { k: ['kept'] } }, metadata: {} },
          ],
        },
      ],
    }),
    'mem.ipynb',
  );
  const cell = nb.cells[0] as CodeCell;
  assert.equal(cell.source, 'x\ny');
  assert.equal(cell.metadata.trusted, undefined, 'trusted is transient');
  assert.deepEqual(cell.outputs[1], { output_type: 'display_data', data: { 'text/html': '<b>\n</b>', 'application/json': { k: ['kept'] } }, metadata: {} });
  const out = serializeNotebook(nb);
  assert.ok(out.endsWith('}\n'));
  assert.ok(out.indexOf('"a": {') < out.indexOf('"z": 1'), 'keys sorted');
  assert.match(out, /\n {3}"source": \[\n {4}"x\\n",\n {4}"y"\n {3}\]/);
  const p = path.join(dir, 'layout.ipynb');
  fs.writeFileSync(p, out);
  validateWithNbformat(p);
  assert.throws(() => parseNotebook('{"nbformat": 3, "cells": []}', 'old.ipynb'), /only version 4/);
  assert.throws(() => parseNotebook('not json', 'bad.ipynb'), /bad.ipynb is not a notebook/);
});

function msg(msgType: string, content: Record<string, unknown>): JupyterMessage {
  return {
    header: { msg_id: 'm', msg_type: msgType, session: 's', username: 'u', date: '', version: '5.3' },
    parent_header: {},
    metadata: {},
    content,
    buffers: [],
  };
}

test('outputs: streams merge, \\r overwrites, display ids update across cells, clear_output waits', () => {
  assert.equal(collapseCarriageReturns('10%\r50%\r100%\ndone\r\n'), '100%\ndone\n');
  const rec = new OutputRecorder();
  const a: CodeCell = { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source: '' };
  const b: CodeCell = { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source: '' };
  rec.begin(a);
  rec.handle(msg('execute_input', { execution_count: 4, code: '' }));
  rec.handle(msg('stream', { name: 'stdout', text: 'step 1\r' }));
  rec.handle(msg('stream', { name: 'stdout', text: 'step 2\n' }));
  rec.handle(msg('stream', { name: 'stderr', text: 'oops\n' }));
  rec.handle(msg('display_data', { data: { 'text/plain': 'v1' }, metadata: {}, transient: { display_id: 'd' } }));
  rec.handle(msg('execute_result', { execution_count: 4, data: { 'text/plain': '42' }, metadata: { m: 1 } }));
  rec.begin(b);
  rec.handle(msg('update_display_data', { data: { 'text/plain': 'v2' }, metadata: { w: 1 }, transient: { display_id: 'd' } }));
  rec.handle(msg('stream', { name: 'stdout', text: 'old' }));
  rec.handle(msg('clear_output', { wait: true }));
  assert.equal(b.outputs.length, 1, 'clear_output(wait) keeps outputs until the next one');
  rec.handle(msg('display_data', { data: { 'text/plain': 'v3' }, metadata: {}, transient: { display_id: 'd' } }));
  rec.handle(msg('error', { ename: 'E', evalue: 'v', traceback: ['t'] }));
  assert.equal(a.execution_count, 4);
  assert.deepEqual(a.outputs, [
    { output_type: 'stream', name: 'stdout', text: 'step 2\n' },
    { output_type: 'stream', name: 'stderr', text: 'oops\n' },
    { output_type: 'display_data', data: { 'text/plain': 'v3' }, metadata: {} },
    { output_type: 'execute_result', execution_count: 4, data: { 'text/plain': '42' }, metadata: { m: 1 } },
  ]);
  assert.deepEqual(b.outputs, [
    { output_type: 'display_data', data: { 'text/plain': 'v3' }, metadata: {} },
    { output_type: 'error', ename: 'E', evalue: 'v', traceback: ['t'] },
  ]);
  rec.handle(msg('clear_output', { wait: false }));
  assert.deepEqual(b.outputs, []);

  const compile = errorFromStderr(["2:5 - Type 'string' is not assignable to type 'number'.\n", '3:1 - Cannot find name \'zz\'.\n']);
  assert.equal(compile.error.ename, 'CompileError');
  assert.equal(compile.error.evalue, "line 2, column 5: Type 'string' is not assignable to type 'number'. (and 1 more)");
  const thrown = errorFromStderr(['user output\n', 'evalmachine.<anonymous>:2\nthrow x;\n^\n\nTypeError: bad thing\n    at evalmachine.<anonymous>:2:7\n    at sigintHandlersWrap (node:vm:280:12)\n']);
  assert.deepEqual([thrown.error.ename, thrown.error.evalue], ['TypeError', 'bad thing']);
  assert.deepEqual(thrown.error.traceback, ['evalmachine.<anonymous>:2', 'throw x;', '^', '', 'TypeError: bad thing', '    at evalmachine.<anonymous>:2:7']);
  assert.deepEqual([errorFromStderr(['a string\n']).error.ename, errorFromStderr(['a string\n']).error.evalue], ['Error', 'a string']);
});

// --- real kernels -----------------------------------------------------------------------------------

const PARAMS_CELL = 'let n: number = 1;\nlet name = "x";\nlet flag = false;\nlet list: number[] = [];\nlet obj: Record<string, unknown> = {};';

function outputsNotebook(file: string): string {
  return writeNb(file, [
    md('# runner test'),
    code(PARAMS_CELL, ['parameters']),
    // tslab doesn't rewrite shorthand properties ({n}) of top-level names: spell them out.
    code('console.log(JSON.stringify({ n: n, name: name, flag: flag, list: list, obj: obj }));'),
    code('  \n'),
    code(
      [
        'import * as tslab from "tslab";',
        'const d = tslab.newDisplay();',
        'for (let i = 1; i <= 3; i++) d.html(`<b>step ${i}</b>`);',
        'tslab.display.html("<i>static</i>");',
        'process.stdout.write("a");',
        'process.stdout.write("b\\n");',
        'console.error("warn line");',
        'n * 2',
      ].join('\n'),
    ),
    code('d.html("<b>final</b>");\nundefined;'),
  ]);
}

test('a parameterized notebook runs: every value type reaches the kernel; streams, displays and updates are recorded', async () => {
  const input = outputsNotebook('outputs.ipynb');
  const output = path.join(dir, 'outputs-out.ipynb');
  const parameters = { n: 3, name: 'say "hi"\nthere é', flag: true, list: [1, 2.5, -3], obj: { a: { b: [null, 'x'] } } };
  const warnings: string[] = [];
  const r = await runNotebook({ input, output, parameters, onWarning: (w) => warnings.push(w), progress: false });
  assert.equal(r.ok, true, r.error);
  assert.deepEqual(warnings, []);
  const nb = readJson(output);
  validateWithNbformat(output);

  assert.deepEqual(
    nb.cells.map((c: Json) => c.metadata.papermill.status),
    ['completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'completed'],
  );
  const [injected] = tagged(nb, 'injected-parameters');
  assert.equal(nb.cells.indexOf(injected), 2, 'right after the parameters cell');
  assert.match(text(injected.source), /^let n: number = 3;$/m);
  assert.deepEqual(injected.outputs, [], 'the injected cell shows nothing, as papermill\'s');
  assert.doesNotMatch(text(injected.source), /undefined/);
  assert.deepEqual(JSON.parse(stdoutOf(nb.cells[3])), parameters);
  assert.equal(nb.cells[4].execution_count, null, 'a blank cell is not sent to the kernel');
  assert.deepEqual(
    nb.cells.filter((c: Json) => c.cell_type === 'code').map((c: Json) => c.execution_count),
    [1, 2, 3, null, 4, 5],
  );

  const shown = nb.cells[5].outputs;
  assert.deepEqual(shown[0], { output_type: 'display_data', data: { 'text/html': ['<b>final</b>'] }, metadata: {} }, 'the last update wins, even from a later cell');
  assert.deepEqual(shown[1], { output_type: 'display_data', data: { 'text/html': ['<i>static</i>'] }, metadata: {} });
  assert.deepEqual(
    shown.slice(2).map((o: Json) => [o.name, text(o.text)]),
    [['stdout', 'ab\n'], ['stderr', 'warn line\n'], ['stdout', '6\n']],
    'stream chunks merged; tslab prints the last expression on stdout (it sends no execute_result)',
  );

  const pm = nb.metadata.papermill;
  assert.deepEqual(pm.parameters, parameters);
  assert.equal(pm.default_parameters.n, '1');
  assert.equal(pm.input_path, input);
  assert.equal(pm.output_path, output);
  assert.equal(pm.exception, null);
  assert.ok(pm.duration > 0 && pm.duration <= r.seconds + 0.01);
  assert.ok(Date.parse(pm.end_time) >= Date.parse(pm.start_time));
  assert.equal(nb.metadata.language_info.name, 'typescript');
  for (const c of nb.cells) assert.equal(typeof c.metadata.papermill.duration, 'number');
});

test('CLI: re-running an executed notebook with new -p/-r/-f values replaces its injected cell', async () => {
  const first = path.join(dir, 'outputs-out.ipynb');
  assert.ok(fs.existsSync(first), 'needs the previous test');
  const paramsFile = path.join(dir, 'p.json');
  fs.writeFileSync(paramsFile, JSON.stringify({ list: [9], flag: false, n: 100 }));
  const output = path.join(dir, 'rerun-out.ipynb');
  const r = await runCli(['run-notebook', first, output, '-f', paramsFile, '-p', 'n', '7', '-r', 'name', '8', '-p', 'zz', 'abc', '--no-progress-bar']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /unknown parameter "zz"/);
  const nb = readJson(output);
  const injected = tagged(nb, 'injected-parameters');
  assert.equal(injected.length, 1, 'exactly one injected cell');
  assert.equal(nb.cells.indexOf(injected[0]), 2);
  assert.deepEqual(JSON.parse(stdoutOf(nb.cells[3])), { n: 7, name: '8', flag: false, list: [9], obj: {} });
  assert.deepEqual(nb.metadata.papermill.parameters, { list: [9], flag: false, n: 7, name: '8', zz: 'abc' });
  validateWithNbformat(output);
});

test('a failing cell: exit 1, error output, papermill error markers, later cells pending; a const parameter is overridden', async () => {
  const input = writeNb('fail.ipynb', [
    code('const limit = 1;', ['parameters']),
    code('console.log("limit", limit);'),
    code('console.log("before");\nfunction boom(): never { throw new Error("boom at " + limit); }\nboom();'),
    code('console.log("never runs");'),
    md('after'),
  ]);
  const output = path.join(dir, 'fail-out.ipynb');
  const r = await runCli(['run-notebook', input, output, '-p', 'limit', '5']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cell 4 \(In \[4\]: console\.log\("before"\);\) failed: Error: boom at 5/);
  const nb = readJson(output);
  validateWithNbformat(output);

  assert.deepEqual(nb.cells[0].metadata.tags, ['papermill-error-cell-tag']);
  assert.equal(
    text(nb.cells[0].source),
    `<span style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;">An Exception was encountered at '<a href="#papermill-error-cell">In [4]</a>'.</span>`,
  );
  assert.equal(stdoutOf(nb.cells[3]), 'limit 5\n', 'the injected let overrides the const');
  const anchor = nb.cells[4];
  assert.deepEqual(anchor.metadata.tags, ['papermill-error-cell-tag']);
  assert.match(text(anchor.source), /<span id="papermill-error-cell" .*>Execution using papermill encountered an exception here and stopped:<\/span>/);
  const failed = nb.cells[5];
  assert.equal(failed.metadata.papermill.status, 'failed');
  assert.equal(failed.metadata.papermill.exception, true);
  assert.equal(failed.execution_count, 4);
  assert.equal(stdoutOf(failed), 'before\n');
  const errs = failed.outputs.filter((o: Json) => o.output_type === 'error');
  assert.equal(errs.length, 1);
  assert.equal(errs[0].ename, 'Error');
  assert.equal(errs[0].evalue, 'boom at 5');
  assert.ok(errs[0].traceback.includes('Error: boom at 5'), errs[0].traceback.join('\n'));
  assert.ok(errs[0].traceback.some((l: string) => /at boom/.test(l)));
  assert.ok(!errs[0].traceback.some((l: string) => /tslab[\\/]dist/.test(l)), 'kernel frames trimmed');
  assert.ok(!failed.outputs.some((o: Json) => o.name === 'stderr'), 'the stack moved into the error output');
  for (const later of nb.cells.slice(6)) {
    assert.equal(later.metadata.papermill.status, 'pending');
    if (later.cell_type === 'code') {
      assert.equal(later.execution_count, null);
      assert.deepEqual(later.outputs, []);
    }
  }
  assert.equal(nb.metadata.papermill.exception, true);

  // Running the failed output again (fixed parameters) drops the old markers.
  const again = path.join(dir, 'fail-prepared.ipynb');
  const p = await runCli(['run-notebook', output, again, '--prepare-only', '-p', 'limit', '6']);
  assert.equal(p.code, 0, p.stderr);
  const prepared = readJson(again);
  assert.equal(tagged(prepared, 'papermill-error-cell-tag').length, 0);
  assert.equal(tagged(prepared, 'injected-parameters').length, 1);
  assert.match(text(tagged(prepared, 'injected-parameters')[0].source), /let limit = 6;/);
});

test('a TypeScript type error fails its cell with a CompileError', async () => {
  const input = writeNb('typeerror.ipynb', [code('let ok = 1;'), code('let q: number = "x";\nconsole.log(q);'), code('ok')]);
  const output = path.join(dir, 'typeerror-out.ipynb');
  const r = await runNotebook({ input, output, progress: false });
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'error');
  assert.match(r.error!, /cell 2 \(In \[2\]: let q: number = "x";\) failed: CompileError: line 1, column 5: Type 'string' is not assignable to type 'number'/);
  const nb = readJson(output);
  validateWithNbformat(output);
  assert.equal(r.failedCell!.index, 3, 'after the marker on top and the anchor before it');
  const cell = nb.cells[r.failedCell!.index];
  assert.deepEqual(cell.outputs, [
    {
      output_type: 'error',
      ename: 'CompileError',
      evalue: "line 1, column 5: Type 'string' is not assignable to type 'number'.",
      traceback: ["1:5 - Type 'string' is not assignable to type 'number'."],
    },
  ]);
  assert.equal(nb.cells[4].metadata.papermill.status, 'pending');
});

test('--execution_timeout interrupts a looping cell and fails the run', async () => {
  const input = writeNb('loop.ipynb', [code('console.log("start");'), code('while (true) {}'), code('console.log("after");')]);
  const output = path.join(dir, 'loop-out.ipynb');
  const r = await runCli(['run-notebook', input, output, '--execution-timeout', '2']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cell 2 \(In \[2\]: while \(true\) \{\}\) timed out after 2 s \(--execution_timeout\)/);
  assert.ok(r.seconds < 20, `took ${r.seconds} s`);
  const nb = readJson(output);
  validateWithNbformat(output);
  const cell = nb.cells[3];
  assert.equal(cell.metadata.papermill.status, 'failed');
  assert.ok(cell.metadata.papermill.duration >= 2);
  const err = cell.outputs.find((o: Json) => o.output_type === 'error');
  assert.equal(err.ename, 'CellTimeoutError');
  assert.ok(cell.outputs.some((o: Json) => o.name === 'stderr' && /interrupted/.test(text(o.text))), 'the interrupt reached the kernel');
  assert.equal(nb.cells[4].execution_count, null);
});

test('a kernel that dies (process.exit) fails the run naming the death', async () => {
  const input = writeNb('die.ipynb', [code('console.log("alive");'), code('process.exit(3);'), code('console.log("after");')]);
  const output = path.join(dir, 'die-out.ipynb');
  const r = await runNotebook({ input, output, progress: false });
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'kernel-died');
  assert.match(r.error!, /the kernel died \(exit code 3\) while running cell 2 \(In \[ \]: process\.exit\(3\);\)/);
  const nb = readJson(output);
  validateWithNbformat(output);
  assert.equal(stdoutOf(nb.cells[1]), 'alive\n');
  const err = nb.cells[r.failedCell!.index].outputs.find((o: Json) => o.output_type === 'error');
  assert.equal(err.ename, 'DeadKernelError');
  assert.match(text(nb.cells[0].source), /In \[ \]/);
});

test('kernel client: a registered kernelspec from JUPYTER_PATH, heartbeat, interrupt of async code, shutdown, start timeout', async () => {
  const jupyterPath = path.join(dir, 'jp');
  const kdir = path.join(jupyterPath, 'kernels', 'mytslab');
  fs.mkdirSync(kdir, { recursive: true });
  fs.writeFileSync(
    path.join(kdir, 'kernel.json'),
    JSON.stringify({ argv: [...projectTslabSpec().argv], display_name: 'Mine', language: 'typescript', env: { RUNNER_TEST_VAR: 'from-spec' } }),
  );
  const spec = findKernelSpec('MyTslab', { JUPYTER_PATH: jupyterPath });
  assert.ok(spec);
  assert.equal(spec.displayName, 'Mine');
  assert.equal(findKernelSpec('nothing-like-this', { JUPYTER_PATH: jupyterPath }), undefined);

  await assert.rejects(KernelClient.start(spec, { cwd: dir, startTimeoutMs: 1 }), /did not answer within/);

  const k = await KernelClient.start(spec, { cwd: dir });
  try {
    assert.equal(await k.ping(), true);
    const seen: JupyterMessage[] = [];
    const r = await k.execute('console.log(process.env.RUNNER_TEST_VAR, process.cwd())', (m) => seen.push(m));
    assert.equal(r.kind, 'done');
    assert.equal(seen[0]?.content.text, `from-spec ${fs.realpathSync(dir)}\n`);
    const t0 = Date.now();
    const slow = await k.execute('await new Promise((r) => setTimeout(r, 60000));', () => undefined, { timeoutMs: 500 });
    assert.equal(slow.kind, 'timeout');
    assert.ok(slow.kind === 'timeout' && slow.reply?.status === 'error', 'the kernel answered the interrupt');
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await k.shutdown();
  }
  assert.ok(k.exit, 'the kernel process is gone');
  assert.equal(await k.ping(100), false);
});

test('kernel-setup.sh registers tslab; Jupyter nbconvert runs a notebook with it and gets the same outputs as our runner', async () => {
  const prefix = path.join(dir, 'prefix');
  const setup = spawnSync('bash', [path.join(REPO_ROOT, 'kernel-setup.sh'), '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(setup.status, 0, setup.stderr + setup.stdout);
  const kernelJson = readJson(path.join(prefix, 'share/jupyter/kernels/tslab/kernel.json'));
  assert.deepEqual(kernelJson, {
    argv: [path.join(REPO_ROOT, 'node_modules/.bin/tslab'), 'kernel', '--config-path', '{connection_file}'],
    display_name: 'TypeScript (tslab)',
    language: 'typescript',
  });
  const rerun = spawnSync('bash', [path.join(REPO_ROOT, 'kernel-setup.sh'), '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(rerun.status, 0);
  assert.match(rerun.stdout, /kernelspec tslab: unchanged/);

  const input = writeNb('small.ipynb', [
    code('let n = 2;', ['parameters']),
    code('import * as tslab from "tslab";\ntslab.display.html("<b>" + n + "</b>");\nconsole.log("n =", n);'),
    code('[1, 2, 3].map((x) => x * n)'),
  ]);
  const env = { ...process.env, JUPYTER_PATH: path.join(prefix, 'share/jupyter'), PYDEVD_DISABLE_FILE_VALIDATION: '1' };
  const viaJupyter = path.join(dir, 'small-nbconvert.ipynb');
  const t0 = Date.now();
  const nbc = spawnSync(
    '/usr/bin/python3',
    ['-m', 'nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=tslab', input, '--output', viaJupyter],
    { env, encoding: 'utf8' },
  );
  const nbconvertSeconds = (Date.now() - t0) / 1000;
  assert.equal(nbc.status, 0, nbc.stderr);

  const ours = path.join(dir, 'small-ours.ipynb');
  const r = await runCli(['run-notebook', input, ours], env);
  assert.equal(r.code, 0, r.stderr);
  console.log(`# wall time on the same 3-cell notebook: run-notebook ${r.seconds.toFixed(2)} s, jupyter nbconvert --execute ${nbconvertSeconds.toFixed(2)} s`);

  const a = readJson(viaJupyter);
  const b = readJson(ours);
  validateWithNbformat(viaJupyter, ours);
  // nbclient takes execution counts from execute_input, which tslab never sends (nbconvert leaves them
  // null); we take them from execute_reply.
  assert.deepEqual(b.cells.map((c: Json) => c.execution_count), [1, 2, 3]);
  const summary = (nb: Json): Json =>
    nb.cells.map((c: Json) => ({
      stdout: stdoutOf(c),
      displays: c.outputs.filter((o: Json) => o.output_type === 'display_data').map((o: Json) => o.data),
    }));
  assert.deepEqual(summary(b), summary(a));
  assert.equal(stdoutOf(b.cells[1]), 'n = 2\n');
  assert.equal(stdoutOf(b.cells[2]), '[ 2, 4, 6 ]\n');
});

test('CLI: --prepare-only writes the parameterized notebook; usage errors exit 2', async () => {
  const input = outputsNotebook('prep.ipynb');
  const out = path.join(dir, 'prep-out.ipynb');
  const ok = await runCli(['run-notebook', input, out, '--prepare-only', '-p', 'n', '4']);
  assert.equal(ok.code, 0, ok.stderr);
  const nb = readJson(out);
  assert.match(text(tagged(nb, 'injected-parameters')[0].source), /let n: number = 4;/);
  assert.ok(nb.cells.every((c: Json) => c.cell_type !== 'code' || c.execution_count === null));
  validateWithNbformat(out);

  const missing = await runCli(['run-notebook', path.join(dir, 'nope.ipynb'), out]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /file not found: .*nope\.ipynb/);
  // -f takes YAML as papermill does.
  const yamlFile = path.join(dir, 'params.yaml');
  fs.writeFileSync(yamlFile, 'n: 5\n');
  const yaml = await runCli(['run-notebook', input, out, '--prepare-only', '-f', yamlFile]);
  assert.equal(yaml.code, 0, yaml.stderr);
  assert.match(text(tagged(readJson(out), 'injected-parameters')[0].source), /let n: number = 5;/);
  fs.writeFileSync(yamlFile, 'n: [1, 2\n');
  const badYaml = await runCli(['run-notebook', input, out, '-f', yamlFile]);
  assert.equal(badYaml.code, 2);
  assert.match(badYaml.stderr, /params\.yaml: not valid YAML/);
  const oneArg = await runCli(['run-notebook', input]);
  assert.equal(oneArg.code, 2);
  const badKernel = await runCli(['run-notebook', input, out, '--kernel', 'no-such-kernel']);
  assert.equal(badKernel.code, 2);
  assert.match(badKernel.stderr, /no Jupyter kernel named "no-such-kernel"/);
});

test('gs:// notebooks are read from and written to Cloud Storage (a local fake of its API)', async () => {
  const fake = new FakeGcs();
  await fake.start();
  fake.createBucket('nb-bucket');
  setGcsClient(new Storage({ apiEndpoint: fake.endpoint, projectId: 'imgclass-test-project' }));
  try {
    const local = writeNb('gcs.ipynb', [code('let n = 1;', ['parameters']), code('console.log("n is", n);')]);
    fake.put('nb-bucket', 'in/gcs.ipynb', fs.readFileSync(local));
    const r = await runNotebook({ input: 'gs://nb-bucket/in/gcs.ipynb', output: 'gs://nb-bucket/out/gcs.ipynb', parameters: { n: 5 }, cwd: dir, progress: false });
    assert.equal(r.ok, true, r.error);
    const saved = fake.get('nb-bucket', 'out/gcs.ipynb');
    assert.ok(saved, 'written to the bucket');
    const nb = JSON.parse(saved.toString('utf8'));
    assert.equal(stdoutOf(nb.cells[2]), 'n is 5\n');
    assert.equal(nb.metadata.papermill.output_path, 'gs://nb-bucket/out/gcs.ipynb');
  } finally {
    setGcsClient(undefined);
    await fake.stop();
  }
});
