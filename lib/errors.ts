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

  /**
   * How console.error and util.inspect show it: the message alone. A notebook kernel (tslab) prints a
   * failed cell's error with console.error, and for a mistake in the user's input the stack trace
   * only buries the message; `err.stack` still has it for debugging.
   */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `${this.name}: ${this.message}`;
  }
}

/** Error message of any thrown value, for reports and logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
