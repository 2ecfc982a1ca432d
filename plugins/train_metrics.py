"""Task metrics during training: a recipe key makes every evaluation also generate answers and score them.

    eval_dataset: vqa_rad_test            # LLaMA-Factory's own keys: what to evaluate on, and when
    eval_strategy: steps
    eval_steps: 200
    vlmr_eval_task: medvqa                # ours: score generated answers with `vlmr eval`'s medvqa scorer
    vlmr_eval_samples: 64                 # the first N eval records (default 64)
    vlmr_eval_max_new_tokens: 32          # greedy answers up to this length (default 32)

Upstream: LLaMA-Factory 0.9.5 evaluates a run during training by its loss only (token accuracy with
`compute_accuracy`); `predict_with_generate` generates, but only in a separate predict run, never at
`eval_steps`, and it has no hook for a task metric. Its argument parser rejects any other key
("Some keys are not used by the HfArgumentParser"). The symptom: the only curve a user sees while fine-tuning
on VQA-RAD or AffectNet is the loss, which does not say whether the answers are right (on our demo the eval
loss keeps falling for epochs after accuracy has saturated, and early on accuracy moves while loss barely does).

Three patches, each on the module that owns the behaviour:
- `llamafactory.hparams.parser` (`patch_train_parser`): `_parse_train_args` takes the `vlmr_eval_*` keys out
  before LLaMA-Factory's parser sees them, checks them (a known task; an eval set and an eval schedule) and
  hands them to the workflow as `finetuning_args.vlmr_eval`.
- `llamafactory.train.sft.workflow` (`patch_sft_trainer`): the SFT workflow builds our subclass of its
  `CustomSeq2SeqTrainer`, whose `evaluate` (what the Trainer calls every `eval_steps`) then generates greedy
  answers for the first N eval records (the prompt is LLaMA-Factory's own templated prompt: the eval record's
  tokens before its answer; images through its collator), scores them with `vlmrecipes.eval.tasks`, and logs
  `eval_vlmr_<task>_<metric>` through the Trainer's `log` (TensorBoard, W&B, `trainer_state.json`) and
  `save_metrics` (`eval_vlmr_results.json` and the run's `all_results.json`, which keeps the last values).
- `llamafactory.train.callbacks` (`patch_log_callback`): LLaMA-Factory's `trainer_log.jsonl` writer copies a
  fixed list of keys; it now copies the `eval_vlmr_*` ones too.

Extra fields a scorer reads (medvqa's `answer_type`, SLAKE's `content_type`...) come from the eval dataset's
JSONL records, joined by position where the record's answer is the decoded reference (as `vlmr eval --dataset`).
Under ZeRO-3 every rank generates (the sharded weights need all ranks); rank 0 writes the files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

PREFIX = "vlmr_eval_"  # recipe keys; logged metrics are named eval_vlmr_<task>_<metric>


@dataclass(frozen=True)
class TaskEvalSettings:
    """The `vlmr_eval_*` keys of a training run.

    Attributes:
        task: a `vlmr eval` task (vlmrecipes.eval.tasks.TASKS).
        samples: how many eval records (the first ones) are generated and scored at each evaluation.
        max_new_tokens: greedy generation length.
        eval_datasets: the run's `eval_dataset` names, whose records give the scorer its extra fields.
        dataset_dir: the run's `dataset_dir`.
    """

    task: str
    samples: int = 64
    max_new_tokens: int = 32
    eval_datasets: tuple[str, ...] = ()
    dataset_dir: str = "data"


def settings_from_args(ours: dict, args: dict) -> TaskEvalSettings | None:
    """Check the `vlmr_eval_*` keys (`ours`, prefix removed) against the rest of a run's arguments."""
    from vlmrecipes.eval.tasks import TASKS

    if not ours:
        return None
    unknown = sorted(set(ours) - {"task", "samples", "max_new_tokens"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(PREFIX + k for k in unknown)}; vlmr_eval_ takes "
                         "vlmr_eval_task, vlmr_eval_samples, vlmr_eval_max_new_tokens")
    if ours.get("task") not in TASKS:
        raise ValueError(f"vlmr_eval_task: {ours.get('task')!r} is not a task; choose one of {', '.join(TASKS)}")
    if not args.get("eval_dataset") and not args.get("val_size"):
        raise ValueError(f"vlmr_eval_task: {ours['task']} needs held-out data: set eval_dataset (or val_size)")
    if str(args.get("eval_strategy", "no")).lower() == "no":
        raise ValueError(f"vlmr_eval_task: {ours['task']} is scored at each evaluation: set eval_strategy: steps "
                         "and eval_steps: N")
    names = args.get("eval_dataset") or ()
    names = tuple(n.strip() for n in names.split(",")) if isinstance(names, str) else tuple(names)
    return TaskEvalSettings(ours["task"], int(ours.get("samples", 64)), int(ours.get("max_new_tokens", 32)),
                            names, str(args.get("dataset_dir", "data")))


def split_args(args: dict | list[str]) -> tuple[dict | list[str], dict, dict]:
    """LLaMA-Factory's arguments (a dict from a YAML file, or `--key value` strings) -> (them without our keys,
    our keys without the prefix, a dict view of all of them)."""
    if isinstance(args, dict):
        rest = {k: v for k, v in args.items() if not k.startswith(PREFIX)}
        return rest, {k[len(PREFIX):]: v for k, v in args.items() if k.startswith(PREFIX)}, args
    view, rest, pending = {}, [], None
    for item in args:  # "--key value", "--key=value", "--flag"
        if item.startswith("--"):
            key, equals, value = item[2:].partition("=")
            view[key], pending, owner = (value if equals else True), (None if equals else key), key
        else:
            owner = pending or ""
            if pending is not None:
                view[pending], pending = item, None
        if not owner.startswith(PREFIX):
            rest.append(item)
    return rest, {k[len(PREFIX):]: v for k, v in view.items() if k.startswith(PREFIX)}, view


def patch_train_parser(parser_module) -> None:
    """`_parse_train_args` accepts the `vlmr_eval_*` keys and passes them on as `finetuning_args.vlmr_eval`."""
    original = parser_module._parse_train_args

    @functools.wraps(original)
    def _parse_train_args(args=None):
        rest, ours, view = split_args(parser_module.read_args(args))
        settings = settings_from_args(ours, view)
        parsed = original(rest)
        parsed[3].vlmr_eval = settings  # (model, data, training, finetuning, generating) arguments
        return parsed

    parser_module._parse_train_args = _parse_train_args


def _eval_records(settings: TaskEvalSettings) -> list:
    """The eval datasets' records in LLaMA-Factory's order (its datasets concatenated as listed)."""
    from pathlib import Path

    from vlmrecipes.eval.data import load_examples

    return [e for name in settings.eval_datasets for e in load_examples(name, Path(settings.dataset_dir))]


def patch_sft_trainer(workflow_module) -> None:
    """The SFT workflow's trainer scores generated answers at each evaluation when `vlmr_eval_task` is set."""
    import torch
    from llamafactory.extras.constants import IGNORE_INDEX
    from transformers.integrations import is_deepspeed_zero3_enabled

    from vlmrecipes.eval.tasks import TASKS
    from vlmrecipes.plugins.mrope_generation import mm_token_type_ids

    class TaskMetricTrainer(workflow_module.CustomSeq2SeqTrainer):
        """LLaMA-Factory's SFT trainer plus generated-answer task metrics at every evaluation."""

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
            settings = getattr(self.finetuning_args, "vlmr_eval", None)
            dataset = self.eval_dataset if eval_dataset is None else eval_dataset
            if settings is None or dataset is None or isinstance(dataset, dict):  # a dict: evaluate() per name
                return metrics
            rows = self._generated_rows(dataset, settings)
            result = TASKS[settings.task].run(rows)
            scores = {f"{metric_key_prefix}_vlmr_{settings.task}_{name.replace('.', '_')}": value
                      for name, value in result.metrics.items() if value is not None}
            self.log(dict(scores))
            self.save_metrics(f"{metric_key_prefix}_vlmr", scores)
            metrics.update(scores)
            return metrics

        @torch.no_grad()
        def _generated_rows(self, dataset, settings: TaskEvalSettings) -> list[dict]:
            """Prediction rows (`predict`, `label`, extra fields) of the first `settings.samples` eval records."""
            if not hasattr(self, "_vlmr_records"):
                self._vlmr_records = _eval_records(settings)
            tokenizer, model = self.processing_class, self.model
            count = min(settings.samples, len(dataset))
            batch_size = self.args.per_device_eval_batch_size
            generate_kwargs = {"max_new_tokens": settings.max_new_tokens, "do_sample": False,
                               "eos_token_id": self._gen_kwargs.get("eos_token_id", tokenizer.eos_token_id),
                               "pad_token_id": tokenizer.pad_token_id, "synced_gpus": is_deepspeed_zero3_enabled()}
            padding_side, was_training = tokenizer.padding_side, model.training
            tokenizer.padding_side = "left"  # generation continues each prompt from its last token
            model.eval()
            rows = []
            try:
                for start in range(0, count, batch_size):
                    features, labels = [], []
                    for index in range(start, min(count, start + batch_size)):
                        prompt, answer = _split_prompt(dataset[index], IGNORE_INDEX)
                        features.append(prompt)
                        labels.append(tokenizer.decode(answer, skip_special_tokens=True).strip())
                    inputs = self._prepare_inputs(self.data_collator(features))
                    inputs.pop("labels", None)
                    types = mm_token_type_ids(model, inputs["input_ids"])
                    if types is not None:  # M-RoPE: generate() builds 3-D positions from the token types
                        inputs = {k: v for k, v in inputs.items() if k not in ("position_ids", "rope_deltas")}
                        inputs["mm_token_type_ids"] = types
                    output = model.generate(**inputs, **generate_kwargs)  # (batch, prompt + new tokens)
                    answers = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:],
                                                     skip_special_tokens=True)
                    for offset, (predict, label) in enumerate(zip(answers, labels)):
                        rows.append(self._row(start + offset, predict.strip(), label))
            finally:
                tokenizer.padding_side = padding_side
                model.train(was_training)
            return rows

        def _row(self, index: int, predict: str, label: str) -> dict:
            """A prediction row; the record's extra fields joined when its answer is this label."""
            row = {"predict": predict, "label": label, "_line": index + 1}
            records = self._vlmr_records
            if index < len(records) and " ".join(records[index].answer.split()) == " ".join(label.split()):
                row = {**records[index].extra, **row}
            return row

    workflow_module.CustomSeq2SeqTrainer = TaskMetricTrainer


def _split_prompt(example: dict, ignore_index: int) -> tuple[dict, list[int]]:
    """An SFT-encoded eval record -> (collator features of its prompt alone, its answer's token ids).

    LLaMA-Factory encodes a record as the templated prompt (labels = ignore_index), including the assistant
    header, followed by the answer (labels = the answer's ids); the prompt part is what a model is asked.
    """
    labels = example["labels"]
    cut = next((i for i, label in enumerate(labels) if label != ignore_index), None)
    if cut is None:
        raise ValueError("an eval record has no answer tokens (all labels ignored): vlmr_eval_task needs "
                         "records with an assistant answer, encoded without packing")
    prompt = {key: example[key] for key in ("images", "videos", "audios") if key in example}
    prompt.update(input_ids=example["input_ids"][:cut], attention_mask=[1] * cut, labels=[ignore_index] * cut)
    return prompt, [token for token in labels[cut:] if token != ignore_index]


class _AddingPool:
    """Stands in for LogCallback's one-thread pool during one `on_log`: the line it submits gets `extra` too."""

    def __init__(self, pool, extra: dict):
        self.pool, self.extra = pool, extra

    def submit(self, write, output_dir, logs):
        return self.pool.submit(write, output_dir, {**logs, **self.extra})


def patch_log_callback(callbacks_module) -> None:
    """LLaMA-Factory's trainer_log.jsonl keeps a fixed list of keys: the `eval_vlmr_*` metrics are added.

    Its `on_log` builds the line from the last `log_history` entry and hands it to a writer thread; the pool is
    swapped for one call, so the metrics go into the very line of their step (no race with the thread).
    """
    original = callbacks_module.LogCallback.on_log

    @functools.wraps(original)
    def on_log(self, args, state, control, **kwargs):
        last = state.log_history[-1] if state.log_history else {}
        metrics = {key: value for key, value in last.items() if "_vlmr_" in key}
        if not metrics or self.thread_pool is None:
            return original(self, args, state, control, **kwargs)
        pool, self.thread_pool = self.thread_pool, _AddingPool(self.thread_pool, metrics)
        try:
            return original(self, args, state, control, **kwargs)
        finally:
            self.thread_pool = pool

    callbacks_module.LogCallback.on_log = on_log
