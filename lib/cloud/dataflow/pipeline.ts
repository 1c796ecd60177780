/**
 * The Beam YAML pipeline of section 5 (pipeline.yaml beside this file), filled in for one run.
 *
 * The template (Yaml_Template) runs every pipeline text through Jinja before parsing it as YAML,
 * so the rendered text carries no Jinja syntax and no `jinja_variables` are sent: the file in the
 * bucket is exactly what runs, and reading the Python back out needs only a YAML parser.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML, { Document, isMap, Scalar, YAMLMap } from 'yaml';
import { UserError } from '../../errors';
import type { Split } from '../../preprocess/shards';

/** The project file; tsc does not copy .yaml into dist/, so it is read from the source tree. */
export const PIPELINE_TEMPLATE_FILE = path.resolve(__dirname, '../../../../lib/cloud/dataflow/pipeline.yaml');

export interface PipelineSettings {
  /** gs:// CSV of the training rows (`path,label`, no header needed). */
  trainCsv: string;
  /** gs:// CSV of the validation rows. */
  validationCsv: string;
  /** The lines of labels.txt, in order: label k is stored as k + 1. */
  labels: string[];
  /** gs:// folder the shards go to (train-*, validation-*, _rejects/). */
  outputDir: string;
  /** Shards per split, as the local run plans them (planShards(rows, n).length). */
  numShards: Record<Split, number>;
}

/** The config of the pipeline's one PyTransform as the template sees it. */
export interface PipelineTransformConfig {
  constructor: string;
  /** The Python code (the `source` kwarg). */
  source: string;
  /** The other kwargs: what the Python's JpegCsvToTFRecord(...) is called with. */
  kwargs: Record<string, unknown>;
}

/** Text Jinja would interpret: variable, statement and comment openers. */
const JINJA_SYNTAX = /\{\{|\{%|\{#/;

const KWARG_PATH = ['pipeline', 'transforms', 0, 'config', 'kwargs'] as const;

function quoted(doc: Document, value: string): Scalar {
  const node = doc.createNode(value) as Scalar;
  // Double quotes for every string: PyYAML reads YAML 1.1, where a plain `no`, `on` or `1e3` label
  // would come back as a boolean or a number.
  node.type = Scalar.QUOTE_DOUBLE;
  return node;
}

function checkGcs(what: string, value: string): void {
  if (!/^gs:\/\/[a-z0-9][a-z0-9._-]*[a-z0-9](\/.*)?$/.test(value)) {
    throw new UserError(`${what} "${value}" is not a gs:// path; the Dataflow workers read and write Cloud Storage only (upload it first)`);
  }
}

function checkNoJinja(what: string, value: string): void {
  if (JINJA_SYNTAX.test(value)) {
    throw new UserError(`${what} "${value}" contains "{{", "{%" or "{#", which Dataflow's YAML template would read as Jinja; rename it`);
  }
}

/** The pipeline YAML for one run, exactly as uploaded and passed as `yaml_pipeline_file`. */
export function renderPipeline(settings: PipelineSettings, templateText = fs.readFileSync(PIPELINE_TEMPLATE_FILE, 'utf8')): string {
  checkGcs('--train_csv', settings.trainCsv);
  checkGcs('--validation_csv', settings.validationCsv);
  checkGcs('--output_dir', settings.outputDir);
  for (const [what, v] of [['--train_csv', settings.trainCsv], ['--validation_csv', settings.validationCsv], ['--output_dir', settings.outputDir]] as const) {
    checkNoJinja(what, v);
  }
  if (settings.labels.length === 0) throw new UserError('labels.txt lists no classes');
  settings.labels.forEach((l, i) => checkNoJinja(`labels.txt:${i + 1}: label`, l));
  for (const split of ['train', 'validation'] as const) {
    const n = settings.numShards[split];
    if (!Number.isInteger(n) || n < 1) throw new UserError(`--num_shards: ${split} needs a whole number of shards ≥ 1, got ${n}`);
  }

  const doc = YAML.parseDocument(templateText);
  const kwargs = doc.getIn(KWARG_PATH);
  if (!isMap(kwargs)) throw new Error(`${PIPELINE_TEMPLATE_FILE}: no ${KWARG_PATH.join('.')} mapping`);
  const set = (key: string, node: unknown): void => {
    if (!(kwargs as YAMLMap).has(key)) throw new Error(`${PIPELINE_TEMPLATE_FILE}: kwargs has no "${key}"`);
    (kwargs as YAMLMap).set(key, node);
  };
  set('train_csv', quoted(doc, settings.trainCsv));
  set('validation_csv', quoted(doc, settings.validationCsv));
  set('output_dir', quoted(doc, settings.outputDir.replace(/\/+$/, '')));
  const labels = doc.createNode([]) as YAML.YAMLSeq;
  for (const l of settings.labels) labels.items.push(quoted(doc, l));
  set('labels', labels);
  set('num_shards', doc.createNode({ train: settings.numShards.train, validation: settings.numShards.validation }));
  const text = doc.toString({ lineWidth: 0 });
  if (JINJA_SYNTAX.test(text)) throw new Error(`${PIPELINE_TEMPLATE_FILE} holds Jinja syntax; the template would rewrite it`);
  return text;
}

/**
 * The PyTransform config as the template sees it: Jinja (which changes nothing in a text without
 * its syntax), then a YAML 1.1 parse, as PyYAML does.
 */
export function pipelineTransformConfig(yamlText: string): PipelineTransformConfig {
  if (JINJA_SYNTAX.test(yamlText)) throw new UserError('the pipeline holds Jinja syntax ("{{", "{%" or "{#"); the template would rewrite it');
  const spec = YAML.parse(yamlText, { version: '1.1' }) as { pipeline?: { transforms?: { type?: string; config?: { constructor?: string; kwargs?: Record<string, unknown> } }[] } };
  const t = spec?.pipeline?.transforms?.[0];
  const kw = t?.config?.kwargs;
  if (t?.type !== 'PyTransform' || !kw || typeof kw.source !== 'string' || typeof t.config?.constructor !== 'string') {
    throw new UserError('the pipeline has no PyTransform with a `source` kwarg as its first transform');
  }
  const { source, ...kwargs } = kw;
  return { constructor: t.config.constructor, source, kwargs };
}

/** The Python code of the rendered pipeline, exactly the string the template hands to Beam. */
export function pipelinePython(yamlText: string): string {
  return pipelineTransformConfig(yamlText).source;
}

