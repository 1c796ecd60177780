/**
 * `imgclass serve` in the foreground: prints the URL, serves until SIGINT/SIGTERM, then drains the
 * requests in flight and exits 0 (a second signal quits at once).
 */
import { startServer, ServeOptions } from './index';

export async function runServeCommand(o: ServeOptions): Promise<void> {
  const server = await startServer(o);
  process.stderr.write(`${server.backendNote}\n`);
  process.stdout.write(
    `serving model "${server.modelName}" version ${server.version} (${server.labels.length} classes) at ${server.url}\n` +
      `predict: POST ${server.predictUrl}\n` +
      `page: ${server.url}/\n`,
  );
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const stop = (sig: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(sig);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  const again = () => process.exit(130);
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  process.stderr.write(`${signal}: finishing requests in flight, then exiting (signal again to quit at once)\n`);
  await server.close();
  process.off('SIGINT', again);
  process.off('SIGTERM', again);
  const s = server.stats();
  process.stderr.write(`stopped; served ${s.requests.ok} request(s), ${s.requests.failed} error(s), ${s.batcher.items} image(s) in ${s.batcher.batches} model call(s)\n`);
}
