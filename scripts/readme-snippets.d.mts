/** A fenced code block of a README. */
export interface ReadmeSnippet {
  /** the fence's info string, lower-cased (`ts`, `sh`, `text`, '' when untagged) */
  lang: string;
  /** 1-based line of the opening fence */
  line: number;
  code: string;
  /** tagged ts/typescript/js/javascript/mjs */
  runnable: boolean;
  /** the reason of a `<!-- no-run: reason -->` comment just before the block */
  noRun?: string;
}

export interface ReadmeSnippetOptions {
  /** where the snippets are written, relative to the README's folder (`test/.readme-snippets`) */
  dir?: string;
  /** per-snippet timeout in ms (300 000) */
  timeout?: number;
  /** when given, each snippet may leave at most `maxNewTensors` tensors allocated */
  tf?: { memory(): { numTensors: number } };
  /** 2000 */
  maxNewTensors?: number;
  /**
   * Also type-check the TypeScript snippets (no-run ones included) with tsc and the package's
   * compiler options less `noUncheckedIndexedAccess` (default: when `tsconfig` exists).
   */
  typecheck?: boolean;
  /** the package's tsconfig (`tsconfig.json` next to the README) */
  tsconfig?: string;
}

export function extractSnippets(markdown: string): ReadmeSnippet[];

/** Registers one vitest test per runnable README snippet; each imports the snippet verbatim. */
export function readmeSnippetTests(readmeUrl: URL | string, options?: ReadmeSnippetOptions): void;
