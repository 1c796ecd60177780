/**
 * A real process that takes a folder lock, for the lock tests:
 *   node dist/test/lock-holder.js folder|file TARGET COMMAND HOLD_MS [START_AT_MS]
 * Waits until START_AT_MS (so several copies claim at the same moment), locks TARGET as COMMAND,
 * prints one JSON line {"ok":true,"pid":…} or {"ok":false,"message":…}, holds the lock HOLD_MS,
 * then releases it and exits 0 (busy: exit 2).
 */
import { lockFile, lockFolder } from '../lib/folder-lock';
import { UserError } from '../lib/errors';

async function main(): Promise<number> {
  const [kind, target, command, holdMs, startAt] = process.argv.slice(2);
  if (!target || !command || !holdMs || (kind !== 'folder' && kind !== 'file')) throw new Error('usage: lock-holder folder|file TARGET COMMAND HOLD_MS [START_AT_MS]');
  const wait = Number(startAt ?? 0) - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const opts = { command, what: kind === 'folder' ? 'folder' : 'file', warn: (m: string) => process.stderr.write(`warning: ${m}\n`) };
  try {
    const lock = await (kind === 'folder' ? lockFolder(target, opts) : lockFile(target, opts));
    process.stdout.write(JSON.stringify({ ok: true, pid: process.pid, claim: lock.claim }) + '\n');
    await new Promise((r) => setTimeout(r, Number(holdMs)));
    await lock.release();
    return 0;
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    process.stdout.write(JSON.stringify({ ok: false, pid: process.pid, message: err.message }) + '\n');
    return 2;
  }
}

main().then((code) => (process.exitCode = code));
