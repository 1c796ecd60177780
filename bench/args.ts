/** `--name value` lookups for the benchmark scripts (they take a handful of numeric flags). */
export function numberArg(name: string, dflt: number, argv: string[] = process.argv): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number, got "${argv[i + 1]}"`);
  return v;
}

export function stringArg(name: string, dflt: string, argv: string[] = process.argv): string {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? dflt : (argv[i + 1] ?? dflt);
}
