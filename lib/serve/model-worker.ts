/**
 * Worker-thread side of ModelThread (model-thread.ts): loads one export version and classifies the
 * batches the server posts, so that the model call does not block the server's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { chooseBackend, BackendName } from '../engine/backend';
import { loadExport } from '../export';
import { errorMessage } from '../errors';
import { makeClassifier, Classifier } from './classifier';
import type { FromModelWorker, ToModelWorker } from './model-thread';

const { versionPath, backend } = workerData as { versionPath: string; backend?: BackendName };
let classifier: Classifier | undefined;

function post(msg: FromModelWorker, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer);
}

async function load(): Promise<void> {
  try {
    const chosen = await chooseBackend(backend);
    classifier = makeClassifier(await loadExport(versionPath));
    post({ kind: 'ready', backendNote: `${chosen.note}; ${classifier.forwardNote}` });
  } catch (err) {
    post({ kind: 'error', message: errorMessage(err) });
  }
}

parentPort!.on('message', (msg: ToModelWorker) => {
  if (msg.kind === 'classify') {
    try {
      const pixels = msg.batch.length / msg.count;
      const inputs = Array.from({ length: msg.count }, (_, i) => msg.batch.subarray(i * pixels, (i + 1) * pixels));
      const out = classifier!.classify(inputs);
      const classes = out[0]?.length ?? 0;
      const probs = new Float32Array(msg.count * classes);
      out.forEach((p, i) => probs.set(p, i * classes));
      post({ kind: 'result', id: msg.id, probs }, [probs.buffer as ArrayBuffer]);
    } catch (err) {
      post({ kind: 'failed', id: msg.id, message: errorMessage(err) });
    }
  } else if (msg.kind === 'dispose') {
    classifier?.dispose();
    classifier = undefined;
    parentPort!.close();
  }
});

void load();
