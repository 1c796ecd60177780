/**
 * An error caused by the user's input (a file, a flag, a CSV line), as opposed to a bug.
 * The CLI prints its message alone, without a stack trace, and exits 2; the message must say
 * what is wrong, where (file, line, field) and what to do.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** Error message of any thrown value, for reports and logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
