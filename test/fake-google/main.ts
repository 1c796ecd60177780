/**
 * Runs the fake Google server as its own process, for running notebooks headless against it:
 *
 *   node dist/test/fake-google/main.js ['{"projectId":"p","buckets":[{"name":"b"}]}'] [--predictor-url URL]
 *
 * prints one JSON line {"root": ..., "env": {...}} on stdout once listening, and runs until SIGTERM
 * or SIGINT. With --predictor-url, endpoints.predict forwards {"instances": [...]} to URL (a local
 * prediction server such as `imgclass serve`) and answers with its "predictions".
 */
import { startFakeGoogle } from './index';
import type { FakeGoogleOptions } from './index';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let options: FakeGoogleOptions = {};
  let predictorUrl: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--predictor-url') predictorUrl = args[++i];
    else if (a.startsWith('{')) options = JSON.parse(a) as FakeGoogleOptions;
    else throw new Error(`fake-google: unknown argument ${a}`);
  }
  const fake = await startFakeGoogle(options);
  if (predictorUrl) {
    const url = predictorUrl;
    fake.setPredictor(async (_endpoint, instances) => {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances }) });
      if (!res.ok) throw new Error(`predictor at ${url} answered ${res.status}: ${await res.text()}`);
      return ((await res.json()) as { predictions: unknown[] }).predictions;
    });
  }
  process.stdout.write(`${JSON.stringify({ root: fake.root, env: fake.env() })}\n`);
  const stop = (): void => {
    void fake.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
