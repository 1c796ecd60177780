/**
 * Showing a PNG or an HTML fragment in a notebook cell, each with a text/plain twin for front ends
 * (and logs) that show no images. Outside a tslab kernel the text goes to stdout instead.
 */
import sharp from 'sharp';
import { sendDisplay } from '../charts/display';

/** Display a PNG (e.g. from imageGrid); `alt` is its text form. */
export async function showPng(png: Uint8Array, alt = '<image>'): Promise<void> {
  const meta = await sharp(png).metadata();
  const sent = sendDisplay({
    data: { 'image/png': Buffer.from(png).toString('base64'), 'text/plain': alt },
    metadata: meta.width && meta.height ? { 'image/png': { width: meta.width, height: meta.height } } : {},
  });
  if (!sent) process.stdout.write(`${alt}\n`);
}

/** Display an HTML fragment with a plain-text twin; extra MIME types (a chart's PNG) may ride along. */
export function showHtml(html: string, text: string, extra: Record<string, unknown> = {}): void {
  if (!sendDisplay({ data: { ...extra, 'text/html': html, 'text/plain': text }, metadata: {} })) process.stdout.write(`${text}\n`);
}
