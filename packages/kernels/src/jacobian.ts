/**
 * `RegkitJacobianDet` and `RegkitJacobianDetGrad` (det(I + ∇u) of a displacement field and
 * its gradient; the contract in `@regkit/core`, used by its `jacobianDeterminant`) for the
 * tfjs cpu and wasm backends, running `csrc/jacobian.c` (WebAssembly) on worker threads.
 * Rows of voxels are split over the threads; every output value is computed by one thread
 * in a fixed order, so results are bit-identical at any thread count.
 */
import { RegkitJacobianDet, RegkitJacobianDetGrad, type tf } from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import { runThreaded } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** `[B, ...S, nd]` → [B, D, H, W, nd] (2D: D = 1); throws on other shapes. */
function geometry(kernel: string, field: tf.TensorInfo): [number, number, number, number, number] {
  const s = field.shape;
  const nd = s.length - 2;
  if ((nd !== 2 && nd !== 3) || s[s.length - 1] !== nd || s.slice(1, -1).some((n) => n < 2)) {
    throw new Error(
      `${kernel}: 'field' must be [B, H, W, 2] or [B, D, H, W, 3] with every spatial size >= 2, got [${s.join(', ')}]`,
    );
  }
  return nd === 3 ? [s[0]!, s[1]!, s[2]!, s[3]!, 3] : [s[0]!, 1, s[1]!, s[2]!, 2];
}

/** Calls of `fn` over the rows (b, z, y) split for the threads (args: fn's leading pointers). */
function rowCalls(fn: string, pointers: number[], geom: number[], values: number) {
  const [B, D, H, W, nd] = geom as [number, number, number, number, number];
  const rows = B * D * H;
  return splitRange(rows, threadsFor(values)).map(([r0, r1]) => ({
    fn,
    args: [...pointers, D, H, W, nd, r0, r1],
  }));
}

/** Kernel function of `RegkitJacobianDet`: field `[B, ...S, nd]` → det `[B, ...S]`. */
export const jacobianDetKernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
  const { field } = inputs as { field: tf.TensorInfo };
  const geom = geometry(RegkitJacobianDet, field);
  const outShape = field.shape.slice(0, -1);
  return runInWasm(backend as BackendLike, [field], [outShape], ([pu, pdet]) => {
    runThreaded(rowCalls('jacobian_det', [pu!, pdet!], geom, size(field.shape)));
  })[0]!;
};

/** Kernel function of `RegkitJacobianDetGrad`: dy `[B, ...S]`, field → dField `[B, ...S, nd]`. */
export const jacobianDetGradKernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
  const { dy, field } = inputs as { dy: tf.TensorInfo; field: tf.TensorInfo };
  const geom = geometry(RegkitJacobianDetGrad, field);
  const nd = geom[4];
  const want = field.shape.slice(0, -1);
  if (dy.shape.length !== want.length || dy.shape.some((n, i) => n !== want[i])) {
    throw new Error(
      `${RegkitJacobianDetGrad}: 'dy' must be [${want.join(', ')}], got [${dy.shape.join(', ')}]`,
    );
  }
  const voxels = size(want);
  return runInWasm(
    backend as BackendLike,
    [field, dy],
    [[...field.shape]],
    ([pu, pdy, pdu, pg]) => {
      // g = dy · cofactors · scale (every row), then du gathered from g (every row)
      runThreaded(rowCalls('jacobian_cofactors', [pu!, pdy!, pg!], geom, voxels * nd * nd));
      runThreaded(rowCalls('jacobian_gather', [pg!, pdu!], geom, voxels * nd * nd));
    },
    [voxels * nd * nd],
  )[0]!;
};

/** The kernel configs of the WebAssembly Jacobian determinant for one backend. */
export function jacobianKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    { kernelName: RegkitJacobianDet, backendName, kernelFunc: jacobianDetKernelFunc },
    { kernelName: RegkitJacobianDetGrad, backendName, kernelFunc: jacobianDetGradKernelFunc },
  ];
}
