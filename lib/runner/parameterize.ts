/**
 * papermill's parameterization for TypeScript notebooks: the values go into a new code cell tagged
 * `injected-parameters` right after the cell tagged `parameters` (or in place of the injected cell an
 * earlier run left, or at the top when there is no parameters cell), so the notebook's own defaults
 * stay visible and the run's values override them.
 *
 * tslab runs each cell as a module and lets a later cell redeclare a top-level name, so the injected
 * `let x = …` overrides `let x` and `const x` alike (a `const` can't be reassigned, but it can be
 * redeclared). The value keeps the parameters cell's type annotation, when there is one, so a value
 * of the wrong type stops the run in the injected cell with a compile error naming the parameter.
 */
import type { Cell, CodeCell, Notebook } from './notebook-io';
import { newCellId } from './notebook-io';
import { translateParameters, type Parameters } from './translator';

export const PARAMETERS_TAG = 'parameters';
export const INJECTED_TAG = 'injected-parameters';

export interface Declaration {
  name: string;
  kind: 'let' | 'const' | 'var';
  /** The type annotation's source text, if any. */
  type?: string;
  /** The initializer's source text, if any. */
  initializer?: string;
}

export function hasTag(cell: Cell, tag: string): boolean {
  return Array.isArray(cell.metadata.tags) && cell.metadata.tags.includes(tag);
}

/**
 * Source with comments blanked and string contents replaced by `x` (same length, same line breaks),
 * so brackets, `=` and `;` can be found by position without being fooled by text inside them.
 */
function mask(src: string): string {
  const out = src.split('');
  let i = 0;
  const blank = (from: number, to: number, keepQuotes: boolean): void => {
    for (let k = from; k < to; k++) if (out[k] !== '\n' && !(keepQuotes && (k === from || k === to - 1))) out[k] = keepQuotes ? 'x' : ' ';
  };
  while (i < src.length) {
    const c = src[i]!;
    if (c === '/' && src[i + 1] === '/') {
      const end = src.indexOf('\n', i);
      const stop = end < 0 ? src.length : end;
      blank(i, stop, false);
      i = stop;
    } else if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end < 0 ? src.length : end + 2;
      blank(i, stop, false);
      i = stop;
    } else if (c === '"' || c === "'" || c === '`') {
      let k = i + 1;
      while (k < src.length && src[k] !== c) {
        if (src[k] === '\\') k++;
        else if (c !== '`' && src[k] === '\n') break;
        k++;
      }
      const stop = Math.min(k + 1, src.length);
      blank(i, stop, true);
      i = stop;
    } else i++;
  }
  return out.join('');
}

const OPEN = '([{';
const CLOSE = ')]}';

/** Index where a type or initializer starting at `from` ends: `stops` at bracket depth 0, or the end of the statement. */
function scanTo(m: string, from: number, stops: string, angle: boolean): number {
  let depth = 0;
  for (let i = from; i < m.length; i++) {
    const c = m[i]!;
    if (c === '=' && m[i + 1] === '>') {
      i++;
      continue;
    }
    if (OPEN.includes(c) || (angle && c === '<')) depth++;
    else if (CLOSE.includes(c) || (angle && c === '>')) depth--;
    if (depth < 0) return i;
    if (depth > 0) continue;
    if (c === ';' || stops.includes(c)) {
      if (c === '=' && (m[i + 1] === '=' || '!<>'.includes(m[i - 1] ?? ''))) continue;
      return i;
    }
    if (c === '\n') {
      // A line break ends the statement unless the expression obviously continues (automatic semicolon insertion, roughly).
      const before = m.slice(from, i).trimEnd().slice(-1);
      const after = m.slice(i + 1).trimStart()[0] ?? '';
      if (before === '' || '=+-*/%&|^<>?:,.('.includes(before) || '.+-*/%&|^?:=<>)]}'.includes(after)) continue;
      return i;
    }
  }
  return m.length;
}

/** Top-level `let`/`const`/`var` declarations of a cell (not destructuring patterns). */
export function findDeclarations(src: string): Declaration[] {
  const m = mask(src);
  const found: Declaration[] = [];
  let depth = 0;
  for (let i = 0; i < m.length; i++) {
    const c = m[i]!;
    if (OPEN.includes(c)) depth++;
    else if (CLOSE.includes(c)) depth = Math.max(0, depth - 1);
    if (depth !== 0) continue;
    const kw = /^(let|const|var)\s+/.exec(m.slice(i, i + 8));
    if (!kw || /[\w$.]/.test(m[i - 1] ?? '')) continue;
    let p = i + kw[0].length;
    for (;;) {
      while (/\s/.test(m[p] ?? '')) p++;
      const id = /^[A-Za-z_$][\w$]*/.exec(m.slice(p));
      if (!id) break;
      const decl: Declaration = { name: id[0], kind: kw[1] as Declaration['kind'] };
      p += id[0].length;
      while (m[p] === ' ' || m[p] === '\t') p++;
      if (m[p] === '!') p++;
      if (m[p] === ':') {
        const end = scanTo(m, p + 1, '=,', true);
        decl.type = src.slice(p + 1, end).trim();
        p = end;
      }
      if (m[p] === '=') {
        const end = scanTo(m, p + 1, ',', false);
        decl.initializer = src.slice(p + 1, end).trim();
        p = end;
      }
      found.push(decl);
      if (m[p] !== ',') break;
      p++;
    }
    i = Math.max(i, p - 1);
  }
  return found;
}

export interface ParameterizeResult {
  notebook: Notebook;
  warnings: string[];
  /** Declarations of the parameters cell (empty when there is none). */
  declarations: Declaration[];
}

/**
 * The injected cell's source, as papermill's: a comment line and one `let` per parameter. tslab
 * prints the value of a cell's last expression statement when it is not null or undefined
 * (tslab/dist/executor.js); a declaration has no value, so the cell shows nothing, and nothing else
 * (such as a trailing `undefined;`) is needed in it.
 */
export function injectedSource(params: Parameters, declarations: Declaration[] = []): string {
  const types = Object.fromEntries(declarations.map((d) => [d.name, d.type]));
  return ['// Parameters', ...translateParameters(params, types)].join('\n');
}

/**
 * Add (or replace) the injected-parameters cell. With no parameters the notebook is left as it is,
 * including an injected cell from an earlier run, as papermill does.
 */
export function parameterizeNotebook(nb: Notebook, params: Parameters): ParameterizeResult {
  const warnings: string[] = [];
  const paramIndex = nb.cells.findIndex((c) => hasTag(c, PARAMETERS_TAG));
  const declarations = paramIndex >= 0 ? findDeclarations(nb.cells[paramIndex]!.source) : [];
  if (Object.keys(params).length === 0) return { notebook: nb, warnings, declarations };

  if (paramIndex >= 0) {
    const declared = new Set(declarations.map((d) => d.name));
    for (const name of Object.keys(params)) {
      if (!declared.has(name)) {
        warnings.push(`passed unknown parameter "${name}": the parameters cell (cell ${paramIndex + 1}) does not declare it; it is injected anyway`);
      }
    }
  }
  const cell: CodeCell = {
    id: newCellId(),
    cell_type: 'code',
    execution_count: null,
    metadata: { tags: [INJECTED_TAG] },
    outputs: [],
    source: injectedSource(params, declarations),
  };
  const cells = [...nb.cells];
  const injectedIndex = cells.findIndex((c) => hasTag(c, INJECTED_TAG));
  if (injectedIndex >= 0) cells.splice(injectedIndex, 1, cell);
  else if (paramIndex >= 0) cells.splice(paramIndex + 1, 0, cell);
  else {
    warnings.push(`the notebook has no cell tagged "${PARAMETERS_TAG}"; the parameters were injected at the top`);
    cells.unshift(cell);
  }
  const papermill = nb.metadata.papermill;
  return {
    notebook: { ...nb, cells, metadata: { ...nb.metadata, ...(papermill ? { papermill: { ...papermill, parameters: params } } : {}) } },
    warnings,
    declarations,
  };
}
