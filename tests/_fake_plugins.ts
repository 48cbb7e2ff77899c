// The fake encoder and sampler of _fake_parts.ts as plugins, so the real command line can run a
// whole training run (checkpoints, metrics, export, signals) in a second or two. A pipeline
// names this module (or a module re-exporting it) in `encoder.use` and `sampler.use`.
import { z } from "zod";
import { definePlugin } from "../core/plugin.ts";
import { fakeEncoder, fakeSampler } from "./_fake_parts.ts";

export const fakeEncoderPlugin = definePlugin({
  kind: "encoder",
  name: "fake-encoder",
  version: "0.0.0",
  options: z.strictObject({ rank: z.int().min(4).default(4) }),
  create: (o: { rank: number }) => fakeEncoder(o.rank),
});

export const fakeSamplerPlugin = definePlugin({
  kind: "sampler",
  name: "fake-sampler",
  version: "0.0.0",
  options: z.strictObject({
    steps: z.int().min(1).default(4),
    eta: z.number().default(1),
    guidance: z.number().default(1),
  }),
  create: (o: { steps: number }) => fakeSampler(o.steps),
});
