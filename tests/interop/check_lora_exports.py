#!/usr/bin/env python3
"""Load texforce's LoRA exports with the loaders users have and measure what they load.

Run by `tests/interop/run_lora_interop.ts` (`deno task interop`), which writes the exports, a
`manifest.json` describing them and `reference.safetensors` (token ids and texforce's own text
encoder hidden states, without and with the LoRA). For every export and every loader call that
could read it, this script loads it, runs the text encoder on the same ids and reports, as one
JSON object on stdout:

- whether the call raised (and what), and every warning about keys it printed
  ("missing", "unexpected", "newly initialized", "No LoRA keys", ...);
- the max abs error of the hidden states against texforce's LoRA output;
- the max abs change against texforce's base output (the LoRA delta; 0 means the LoRA was
  dropped).

It only measures; the Deno driver holds the expectations. Exit codes: 0 measured, 3 skipped
(this Python lacks torch, transformers or peft; the reason is printed on stderr), 2 bad input.
Nothing is downloaded: every path is local.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import traceback
import warnings

SKIP = 3

KEY_WARNING = re.compile(
    r"missing|unexpected|newly initiali[sz]ed|not used|not initiali[sz]ed|were not|"
    r"No LoRA keys|unused|did not match|mismatch|ignored",
    re.IGNORECASE,
)
# The exports hold only the text encoder's LoRA, so diffusers' note that the UNet got none is
# what should happen, not a dropped key.
BENIGN = re.compile(r"No LoRA keys associated to UNet2DConditionModel")


def skip(reason):
    print(f"SKIP: {reason}", file=sys.stderr)
    sys.exit(SKIP)


try:
    import torch
except Exception as e:  # noqa: BLE001 - any import failure means "no usable torch"
    skip(f"{sys.executable}: cannot import torch ({type(e).__name__}: {e})")
try:
    import transformers
    from transformers import CLIPTextModel
except Exception as e:  # noqa: BLE001
    skip(f"{sys.executable}: cannot import transformers ({type(e).__name__}: {e})")
try:
    import peft
    from peft import PeftModel
except Exception as e:  # noqa: BLE001
    skip(f"{sys.executable}: cannot import peft ({type(e).__name__}: {e})")
try:
    from safetensors.torch import load_file
except Exception as e:  # noqa: BLE001
    skip(f"{sys.executable}: cannot import safetensors ({type(e).__name__}: {e})")

DIFFUSERS_ERROR = None
try:
    import diffusers
    from diffusers import StableDiffusionPipeline
except Exception as e:  # noqa: BLE001 - diffusers is optional: its loaders are reported skipped
    diffusers = None
    DIFFUSERS_ERROR = f"cannot import diffusers ({type(e).__name__}: {str(e).splitlines()[0]})"


class Capture(logging.Handler):
    """Collects every log record of WARNING and above."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured():
    """Warnings, log records and printed text of a block (transformers 5 prints load reports)."""
    handler = Capture()
    loggers = [logging.getLogger(n) for n in ("", "transformers", "diffusers", "peft")]
    for lg in loggers:
        lg.addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield handler.messages
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            handler.messages.extend(str(w.message) for w in caught)
            handler.messages.extend(x for x in (out.getvalue() + err.getvalue()).splitlines() if x)


def quiet_libraries():
    # Library loggers propagate to the capture; progress bars only add noise.
    for name in ("transformers", "diffusers"):
        mod = sys.modules.get(name)
        utils = getattr(mod, "utils", None) if mod else None
        logging_mod = getattr(utils, "logging", None) if utils else None
        if logging_mod is not None:
            try:
                logging_mod.set_verbosity_warning()
                logging_mod.disable_progress_bar()
                logging_mod.enable_propagation()
                logging_mod.disable_default_handler()
            except Exception:  # noqa: BLE001 - older versions lack some of these
                pass


def hidden_states(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids)
    h = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
    return h.float()


def pipeline(model_dir):
    return StableDiffusionPipeline.from_pretrained(
        model_dir, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )


def base_text_encoder(model_dir):
    return CLIPTextModel.from_pretrained(
        model_dir, subfolder="text_encoder", local_files_only=True
    )


def loaders(model_dir):
    """Loader calls by name: each returns the text encoder to run."""

    def merged(path):
        return CLIPTextModel.from_pretrained(path, local_files_only=True)

    def peft_model(path):
        return PeftModel.from_pretrained(base_text_encoder(model_dir), path)

    def te_load_adapter(path):
        if diffusers is not None:
            pipe = pipeline(model_dir)
            pipe.text_encoder.load_adapter(path)
            return pipe.text_encoder
        te = base_text_encoder(model_dir)
        te.load_adapter(path)
        return te

    def load_lora_weights(path):
        pipe = pipeline(model_dir)
        if os.path.isdir(path):
            # What a user passes after diffusers' offline mode asks for a weight_name.
            names = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            pipe.load_lora_weights(path, weight_name=names[0] if names else None)
        else:
            pipe.load_lora_weights(os.path.dirname(path), weight_name=os.path.basename(path))
        return pipe.text_encoder

    return {
        "CLIPTextModel.from_pretrained": (merged, False),
        "PeftModel.from_pretrained": (peft_model, False),
        "pipe.text_encoder.load_adapter": (te_load_adapter, False),
        "pipe.load_lora_weights": (load_lora_weights, True),
    }


# Which calls are tried on which format (including calls users try that are not loaders of it,
# so that the table shows what they do).
CALLS = {
    "merged": ["CLIPTextModel.from_pretrained"],
    "peft": ["PeftModel.from_pretrained", "pipe.text_encoder.load_adapter", "pipe.load_lora_weights"],
    "diffusers": ["pipe.load_lora_weights"],
    "kohya": ["pipe.load_lora_weights"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", required=True, help="folder with manifest.json")
    ap.add_argument("--model", required=True, help="the diffusers model folder the LoRA is for")
    ap.add_argument("--reference", required=True, help="reference.safetensors from texforce")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    logging.basicConfig(level=logging.ERROR)
    quiet_libraries()

    try:
        with open(os.path.join(args.exports, "manifest.json")) as f:
            manifest = json.load(f)
        ref = load_file(args.reference)
        ids = ref["input_ids"].long()
        base_ref = ref["base.last_hidden_state"].float()
        lora_ref = ref["lora.last_hidden_state"].float()
    except (OSError, KeyError, ValueError) as e:
        print(f"{args.exports} / {args.reference}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)

    stack = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "diffusers": diffusers.__version__ if diffusers is not None else None,
    }
    tol = 1e-4 * max(1.0, float(lora_ref.abs().max()))
    results = []

    # The stack's own base encoder must equal texforce's: otherwise nothing below means anything.
    with captured() as msgs:
        base = hidden_states(base_text_encoder(args.model), ids)
    base_err = float((base - base_ref).abs().max())
    base_warnings = [m for m in msgs if KEY_WARNING.search(m)][:5]

    calls = loaders(args.model)
    for export in manifest["exports"]:
        for call in CALLS[export["format"]]:
            fn, needs_diffusers = calls[call]
            row = {
                "name": export["name"],
                "format": export["format"],
                "layout": export["layout"],
                "call": call,
            }
            if needs_diffusers and diffusers is None:
                row["skipped"] = DIFFUSERS_ERROR
                results.append(row)
                continue
            with captured() as msgs:
                try:
                    model = fn(os.path.join(args.exports, export["path"]))
                    h = hidden_states(model, ids)
                except Exception as e:  # noqa: BLE001 - a crash is a result
                    tb = traceback.extract_tb(e.__traceback__)
                    where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    row["error_at"] = where
                    h = None
            row["warnings"] = [m for m in msgs if KEY_WARNING.search(m) and not BENIGN.search(m)][:5]
            row["notes"] = [m for m in msgs if BENIGN.search(m)][:2]
            if h is not None:
                row["max_error"] = float((h - lora_ref).abs().max())
                row["lora_delta"] = float((h - base_ref).abs().max())
            results.append(row)

    json.dump(
        {
            "stack": stack,
            "tolerance": tol,
            "base_error": base_err,
            "base_warnings": base_warnings,
            "reference_delta": float((lora_ref - base_ref).abs().max()),
            "results": results,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
