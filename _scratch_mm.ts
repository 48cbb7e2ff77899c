import * as tf from "@tensorflow/tfjs";
import { useBackend } from "./core/backend.ts";
await useBackend("wasm");
function loop(a: tf.Tensor3D, b: tf.Tensor3D, ta = false, tb = false) {
  return tf.tidy(() => {
    const at = ta ? tf.transpose(a, [0, 2, 1]) : a;
    const bt = tb ? tf.transpose(b, [0, 2, 1]) : b;
    const as = tf.unstack(at), bs = tf.unstack(bt);
    return tf.stack(as.map((x, i) => tf.matMul(x as tf.Tensor2D, bs[i] as tf.Tensor2D)));
  });
}
async function time(f: () => tf.Tensor) {
  for (let i = 0; i < 3; i++) { const y = f(); await y.data(); y.dispose(); }
  const ts: number[] = [];
  for (let i = 0; i < 15; i++) {
    const t0 = performance.now(); const y = f(); await y.data(); y.dispose(); ts.push(performance.now() - t0);
  }
  return ts.sort((a, b) => a - b)[7].toFixed(2);
}
const cases: [number[], number[], boolean, boolean][] = [
  [[16, 256, 256], [16, 256, 16], false, false],
  [[16, 256, 16], [16, 256, 16], false, true],
  [[16, 256, 77], [16, 77, 16], false, false],
  [[16, 256, 16], [16, 77, 16], false, true],
  [[16, 256, 77], [16, 256, 16], true, false],
  [[16, 256, 256], [16, 256, 16], true, false],
  [[16, 64, 64], [16, 64, 32], false, false],
];
for (const [sa, sb, ta, tb] of cases) {
  const a = tf.randomNormal(sa) as tf.Tensor3D, b = tf.randomNormal(sb) as tf.Tensor3D;
  const d = (await tf.max(tf.abs(tf.sub(tf.matMul(a, b, ta, tb), loop(a, b, ta, tb)))).data())[0];
  console.log(JSON.stringify([sa, sb, ta, tb]), "stock", await time(() => tf.matMul(a, b, ta, tb)), "loop", await time(() => loop(a, b, ta, tb)), "diff", d.toExponential(1));
}
