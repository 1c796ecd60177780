/**
 * The serving benchmark's load generator (autocannon), run by bench/serve.ts as a process of its own
 * so that the clients' work shares neither the server's process nor the coordinator's.
 *   node dist/bench/serve-load.js '{"url":...,"bodyFile":...,"connections":32,"seconds":10}'
 * Prints one JSON line: the LoadResult fields of autocannon's result.
 */
import * as fs from 'node:fs';

export interface LoadRequest {
  url: string;
  /** File holding the JSON request body (a JPEG in base64 is too long to pass comfortably on argv). */
  bodyFile: string;
  connections: number;
  seconds: number;
}

/** What bench/serve.ts reads of autocannon's result. */
export interface LoadResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
}

// autocannon ships no types; only what is used here.
type Autocannon = (opts: Record<string, unknown>) => Promise<LoadResult>;

async function main(): Promise<void> {
  const req = JSON.parse(process.argv[2] ?? '') as LoadRequest;
  const autocannon = require('autocannon') as Autocannon; // eslint-disable-line @typescript-eslint/no-require-imports
  const r = await autocannon({
    url: req.url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: fs.readFileSync(req.bodyFile, 'utf8'),
    connections: req.connections,
    duration: req.seconds,
  });
  const out: LoadResult = {
    requests: { average: r.requests.average, total: r.requests.total },
    latency: { p50: r.latency.p50, p99: r.latency.p99, average: r.latency.average },
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  });
}
