/**
 * Worker-thread entry for preprocessing (run by piscina): read one image, check or convert it,
 * return its serialized Example. Reading happens here too, so file I/O, decoding and protobuf
 * encoding all spread over the cores while the main thread only frames and writes records.
 */
import { readFile } from '../storage';
import { errorMessage } from '../errors';
import { imageToExample, ImageRecordResult } from './image';

export interface WorkerTask {
  path: string;
  label: string;
  labelIndex: number;
  resize: number;
}

export default async function processRow(task: WorkerTask): Promise<ImageRecordResult> {
  let bytes: Buffer;
  try {
    bytes = await readFile(task.path);
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
  return imageToExample({ bytes, filename: task.path, label: task.label, labelIndex: task.labelIndex, resize: task.resize });
}
