// Regression test: tfjs-backend-cpu 4.22's ResizeNearestNeighborGrad reads the upstream
// gradient at the wrong batch stride, so every sample but the first got a wrong gradient through
// the UNet's and VAE's upsamplers. `upsample` works around it; this checks it on every backend.
import * as tf from "@tensorflow/tfjs";
import { upsample } from "../../../adapters/unet/resample.ts";
import { useBackend } from "../../../core/backend.ts";
import { assertClose } from "../../_helpers.ts";

Deno.test("upsample: gradient of a batch > 1 is the sum over each 2×2 block", async (t) => {
  for (const backend of ["cpu", "wasm"] as const) {
    await t.step(backend, async () => {
      await useBackend(backend);
      const [b, h, w, c] = [3, 4, 5, 2];
      const x = tf.tensor4d(Array.from({ length: b * h * w * c }, (_, i) => Math.sin(i)), [
        b,
        h,
        w,
        c,
      ]);
      const dyData = Array.from({ length: b * 2 * h * 2 * w * c }, (_, i) => Math.cos(i * 0.7));
      const dy = tf.tensor4d(dyData, [b, 2 * h, 2 * w, c]);
      // A 1×1 identity conv isolates the resize.
      const identity = {
        weight: tf.eye(c).reshape([1, 1, c, c]) as tf.Tensor4D,
        stride: 1,
        padding: 0,
      };
      const g = tf.grad((v: tf.Tensor) => upsample(identity, v as tf.Tensor4D).mul(dy).sum())(x);
      const expected = new Float32Array(b * h * w * c);
      for (let n = 0; n < b; n++) {
        for (let i = 0; i < 2 * h; i++) {
          for (let j = 0; j < 2 * w; j++) {
            for (let k = 0; k < c; k++) {
              expected[((n * h + (i >> 1)) * w + (j >> 1)) * c + k] +=
                dyData[((n * 2 * h + i) * 2 * w + j) * c + k];
            }
          }
        }
      }
      assertClose(await g.data(), expected, 1e-6, `${backend} upsample gradient`);
      tf.dispose([x, dy, g, identity.weight]);
    });
  }
});
