/** Messages between the page (main.ts) and the registration worker (worker.ts). */
import type { RegistrationFigure } from '@regkit/io';

/** A file the user picked (or a bundled demo file): its name and bytes. */
export interface InputFile {
  name: string;
  bytes: Uint8Array;
}

/** The similarities offered on the page (names of `registerImages`). */
export type SimilarityChoice = 'mi' | 'lncc' | 'mind';

/**
 * Page → worker. `wasmPaths` (from the page's `?wasmPaths=` query, for tests) replaces the
 * URLs of the bundled .wasm files: a wrong folder shows initBackend's fallback warning.
 */
export type Request = { wasmPaths?: string } & (
  | {
      type: 'register';
      fixed: InputFile;
      moving: InputFile;
      /** Label maps on the fixed and moving grids (optional): Dice before and after. */
      fixedLabels?: InputFile;
      movingLabels?: InputFile;
      similarity: SimilarityChoice;
    }
  | {
      /**
       * The demo: the T1 slice (moving) and the proton-density slice deformed by a seeded
       * random smooth field (fixed), as `regkit demo --case 2d`; labels are automatic T1
       * intensity classes, so Dice before and after is known.
       */
      type: 'demo';
      t1: InputFile;
      pd: InputFile;
    }
);

/** Where the registration ran: what the browser test checks. */
export interface BackendReport {
  /** `tf.getBackend()` after `initBackend`. */
  name: string;
  /** `@regkit/kernels`' kernels are the ones registered for that backend. */
  kernels: boolean;
  /** Threads `@regkit/kernels` runs its kernels on (this worker included; 1: no workers). */
  kernelThreads: number;
  /** Why the kernels run on 1 thread (null when they use workers or were asked for 1). */
  kernelThreadsReason: string | null;
  /** `navigator.hardwareConcurrency` in the worker (logical cores the browser reports). */
  cores: number;
  /** The page is cross-origin isolated (SharedArrayBuffer, wasm threads). */
  crossOriginIsolated: boolean;
  /** initBackend's warnings (a fallback to cpu names what failed). */
  warnings: string[];
}

/** Worker → page. */
export type Reply =
  | { type: 'backend'; backend: BackendReport }
  | { type: 'status'; text: string }
  | {
      type: 'progress';
      /** Iterations done and their total, over all levels and stages. */
      done: number;
      total: number;
      level: number;
      levels: number;
      similarity: number;
    }
  | {
      type: 'result';
      backend: BackendReport;
      shape: number[];
      similarity: SimilarityChoice;
      seconds: number;
      /** Mean Dice over the labels present, when label maps were given (or the demo). */
      diceBefore?: number;
      diceAfter?: number;
      /** % of voxels with det(I + ∇u) ≤ 0. */
      foldingPercent: number;
      /** The registration figure (`@regkit/io`'s renderRegistrationFigure), as `regkit register --png` draws it. */
      figure: RegistrationFigure;
      /** NIfTI files: the fixed image, the warped moving image and the field (ITK/ANTs); the figure as PNG. */
      files: { fixed: Uint8Array; warped: Uint8Array; field: Uint8Array; figure: Uint8Array };
      notes: string[];
    }
  | { type: 'error'; message: string };
