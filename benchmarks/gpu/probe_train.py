"""`llamafactory-cli train RECIPE key=value ...` with a measuring callback; writes what it measured to $VLMR_PROBE_OUT.

    VLMR_PROBE_OUT=probe.json python benchmarks/gpu/probe_train.py RECIPE key=value ...
    VLMR_PROBE_OUT=probe.json torchrun --nproc_per_node 1 benchmarks/gpu/probe_train.py RECIPE key=value ...

The same code path as `llamafactory-cli train` (its launcher calls `run_exp()`, which reads the recipe and the
overrides from the command line; torchrun runs the launcher file itself the same way), with one extra
`TrainerCallback` through `run_exp`'s own `callbacks` argument: no patch, nothing registered in production.
On rank 0 it records
- the attention implementation the model really got: `_attn_implementation` of the config and of each
  sub-config (language model, vision tower), read from the model the Trainer trains;
- the wall-clock end of every optimizer step (after `torch.cuda.synchronize()`, so queued kernels count);
- the train set as LLaMA-Factory tokenized it: non-padding length and image tokens of every sample;
- parameters of the language model (input embeddings excluded: a lookup, no matmul) and of the vision tower
  with its projector (`parameter_split`; ZeRO-3 partitioned parameters by `ds_numel`);
- peak device memory of this process at the end of training: `torch.cuda.max_memory_allocated()` and
  `max_memory_reserved()` (on the CPU: the process's peak resident set, `ru_maxrss`).
A single-process run then exits at once: LLaMA-Factory's final `save_model` (GBs for a full fine-tune) is skipped.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch
from transformers import TrainerCallback


def _synchronized_now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def attention_implementations(config) -> dict[str, str | None]:
    """{'model': ..., '<sub-config>': ...} as set on the loaded model's configs."""
    found = {"model": getattr(config, "_attn_implementation", None)}
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None:
            found[key] = getattr(sub, "_attn_implementation", None)
            found.update({f"{key}.{k}": v for k, v in attention_implementations(sub).items() if k != "model"})
    return found


def _image_token_id(config) -> int | None:
    return next((v for v in (getattr(config, "image_token_id", None), getattr(config, "image_token_index", None))
                 if v is not None), None)


def parameter_split(model) -> dict[str, int]:
    """Parameters by role: 'vision' (every module under the tower's top-level key of LLaMA-Factory's composite-model
    table, the projector included), 'audio' (an Omni audio tower: idle on image data), 'embedding' (input
    embeddings) and 'language' (the rest: decoder layers, final norm, lm_head, LoRA adapters)."""
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    composite = COMPOSITE_MODELS.get(getattr(model.config, "model_type", None))
    keys = (list(composite.vision_model_keys) + list(composite.projector_keys)) if composite else []
    vision_prefixes = {key.split(".")[0] + "." for key in keys if "audio" not in key}
    split = {"vision": 0, "audio": 0, "embedding": 0, "language": 0}
    seen = set()
    for name, parameter in model.named_parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        numel = getattr(parameter, "ds_numel", parameter.numel())
        parts = set(name.split("."))
        if "audio_tower" in parts:
            split["audio"] += numel
        elif any(f".{prefix}" in f".{name}" for prefix in vision_prefixes):
            split["vision"] += numel
        elif "embed_tokens" in parts:
            split["embedding"] += numel
        else:
            split["language"] += numel
    return split


class StepProbe(TrainerCallback):
    def __init__(self, out_path: str):
        self.out_path = out_path
        self.record: dict = {"step_end_seconds": []}
        self.start = 0.0

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        config = model.config
        self.record["attention"] = attention_implementations(config)
        self.record["parameters"] = parameter_split(model)
        vision = getattr(config, "vision_config", None)
        self.record["vision_merge"] = getattr(vision, "spatial_merge_size", 1) ** 2 if vision is not None else 1
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is not None and "input_ids" in getattr(dataset, "column_names", []):
            image_id = _image_token_id(config)
            lengths, image_tokens = [], []
            for ids in dataset["input_ids"]:
                lengths.append(len(ids))
                image_tokens.append(sum(1 for t in ids if t == image_id))
            self.record["sample_tokens"] = lengths
            self.record["sample_image_tokens"] = image_tokens
        self.record["world_size"] = args.world_size
        self.record["samples_per_step"] = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                           * args.world_size)
        self.start = _synchronized_now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.record["step_end_seconds"].append(_synchronized_now() - self.start)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if torch.cuda.is_available():
            self.record["device"] = torch.cuda.get_device_name()
            self.record["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            self.record["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        else:
            self.record["device"] = "cpu"
            self.record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.record["losses"] = [entry["loss"] for entry in state.log_history if "loss" in entry]
        with open(self.out_path, "w") as f:
            json.dump(self.record, f)
        if args.world_size == 1:
            # Measured: end here rather than let LLaMA-Factory save the final model (GBs for a full fine-tune,
            # and GPU-machine time) that nobody reads.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


if __name__ == "__main__":
    from llamafactory.train.tuner import run_exp

    run_exp(callbacks=[StepProbe(os.environ["VLMR_PROBE_OUT"])])
