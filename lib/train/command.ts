/**
 * `imgclass train` on a terminal: a progress bar, a line per evaluation, Ctrl-C = stop after the
 * current step with a checkpoint (exit 130), a second Ctrl-C = quit at once.
 */
import { train, TrainEvent, TrainOptions } from './index';
import { terminalProgress } from '../progress';
import { evaluateTestSplit } from '../evaluation/test-split';
import { formatEvaluation } from '../evaluation/run';

export type TrainCommandOptions = Omit<TrainOptions, 'signal' | 'onEvent'>;

export async function runTrainCommand(o: TrainCommandOptions): Promise<void> {
  const abort = new AbortController();
  const onSigint = () => {
    process.stderr.write('\nstopping after this step (checkpoint is saved); press Ctrl-C again to quit at once\n');
    process.off('SIGINT', onSigint);
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  let bar: ReturnType<typeof terminalProgress> | undefined;
  let download: ReturnType<typeof terminalProgress> | undefined;
  const onEvent = (e: TrainEvent) => {
    if (e.kind === 'download') {
      download ??= terminalProgress(`download ${e.source}`, e.totalBytes);
      download.update(e.bytes, { rate: `${(e.bytes / 1e6).toFixed(1)} of ${(e.totalBytes / 1e6).toFixed(1)} MB` });
      if (e.bytes >= e.totalBytes) {
        download.stop();
        download = undefined;
      }
      return;
    }
    if (e.kind === 'notice') {
      process.stderr.write(`${e.message}\n`);
      return;
    }
    if (e.kind === 'start') {
      process.stderr.write(
        `${e.backendNote}; ${e.replicas} replica(s)\n` +
          (e.transfer ? `${e.transfer}\n` : '') +
          `${e.transfer ? 'model' : `ResNet-${o.resnetDepth ?? 18} at ${o.imageSize ?? 64} px`}: ${(e.params / 1e6).toFixed(2)} M parameters, ${(e.flopsPerImage / 1e9).toFixed(2)} GFLOPs/image; ` +
          `${e.numTrainImages} training / ${e.numEvalImages} validation images, ${e.numClasses} classes` +
          (e.resumed ? `; resuming at step ${e.startStep}` : '') + '\n' +
          (e.notice ? `${e.notice}\n` : ''),
      );
      bar = terminalProgress('train', e.trainSteps);
      bar.update(e.startStep);
    } else if (e.kind === 'step') {
      bar?.update(e.step, { rate: `${e.imagesPerSecond.toFixed(1)} img/s`, loss: e.loss.toFixed(3), lr: e.lr.toPrecision(3) });
    } else if (e.kind === 'eval') {
      bar?.stop();
      process.stderr.write(`eval at step ${e.step}: top-1 ${(100 * e.top1).toFixed(1)} %` + (e.top5 !== undefined ? `, top-5 ${(100 * e.top5).toFixed(1)} %` : '') + `, loss ${e.loss.toFixed(4)} (${e.count} images, ${e.seconds.toFixed(1)} s)\n`);
      bar = terminalProgress('train', o.trainSteps);
      bar.update(e.step);
    } else if (e.kind === 'export') {
      process.stderr.write(`exported to ${e.path}\n`);
    }
  };
  try {
    const r = await train({ ...o, signal: abort.signal, onEvent });
    bar?.stop();
    process.stdout.write(
      `${r.interrupted ? 'stopped' : 'trained'} to step ${r.step} in ${r.seconds.toFixed(1)} s (${r.imagesPerSecond.toFixed(1)} img/s, ${r.engine} x${r.replicas})` +
        (r.lastEval ? `; top-1 ${(100 * r.lastEval.top1).toFixed(1)} %` : '') +
        (r.exportPath ? `; export: ${r.exportPath}` : '') + '\n',
    );
    if (r.interrupted) process.exitCode = 130;
    else if (r.exportPath) {
      // Once, at the end: the test split (when the data has one) was never looked at before.
      const t = await evaluateTestSplit({ modelDir: r.exportPath, dataDir: o.dataDir, backend: o.backend });
      if (t) process.stdout.write(`held-out test split, evaluated once:\n${formatEvaluation(t)}`);
    }
  } finally {
    download?.stop();
    bar?.stop();
    process.off('SIGINT', onSigint);
  }
}
