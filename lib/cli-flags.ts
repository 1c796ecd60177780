/**
 * Flag spelling. The tutorial and the README write flags in snake_case (`--train_csv`); commander
 * parses kebab-case, so arguments are turned into kebab-case on the way in and every flag commander
 * names on the way out (help, error messages) is turned back into snake_case, so a message names a
 * flag exactly as the user typed it from the README.
 */

/** `--train_csv=x` → `--train-csv=x`, so both spellings reach commander as one option. */
export function normalizeFlags(argv: string[]): string[] {
  return argv.map((a) => {
    if (!a.startsWith('--')) return a;
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    return name.replace(/_/g, '-') + (eq < 0 ? '' : a.slice(eq));
  });
}

/** Every `--kebab-case` flag in `text` written `--snake_case` (`--no-progress-bar` → `--no_progress_bar`). */
export function snakeCaseFlags(text: string): string {
  return text.replace(/(?<![\w-])--[a-z0-9]+(?:-[a-z0-9]+)+/g, (flag) => `--${flag.slice(2).replace(/-/g, '_')}`);
}
