// Loading models through the run's ModelCache, so rewards on the same weights share one copy.
import { ClipModel } from "../adapters/clip_vision_model.ts";
import { ModelCache, type SharedModel } from "../core/model_cache.ts";

/** The transformers CLIPModel in `dir` (an absolute path), shared through `cache`. */
export function sharedClipModel(
  cache: ModelCache | undefined,
  dir: string,
): Promise<SharedModel<ClipModel>> {
  return (cache ?? new ModelCache()).acquire(
    `clip-model:${dir}`,
    () => ClipModel.load(dir),
    (m) => m.dispose(),
  );
}
