"""Proof that LLaMA-Factory's `neat_packing` trains each sample of a pack exactly as if it were alone.

Everything runs in-process on LLaMA-Factory 0.9.5's own objects, as `llamafactory-cli train` builds them:
`get_train_args`, the tokenizer/processor and template of a tiny twin, `load_model`, the packed and the plain
`SupervisedDatasetProcessor`, and `SFTDataCollatorWith4DAttentionMask` with `pad_to_multiple_of=8`. A packed batch
of four samples (images of three sizes, one text-only sample, one pack filled to its last token, `cutoff_len`
not a multiple of 8) is compared, sub-sequence by sub-sequence, with each sample collated and run alone:
3-D M-RoPE positions, logits, loss and gradients (fp32 on the CPU).

Tolerances (measured maxima over all twins and both attentions in brackets): positions are integers and must be
equal; logits within 1e-6 absolute (2e-7: the packed row is a longer matmul, so float sums are reordered); a
sample's summed loss within 1e-6 relative (0); each parameter's gradient within 1e-5 of the largest gradient entry
(2.3e-7). Leaks: perturbing one sample's answer tokens and image pixels must leave every other sample's logits, in
its pack and in the other packs, unchanged (1e-6); plain `packing: true` is shown to leak.

FlashAttention-2 cannot run on the CPU (its kernels are CUDA-only), so its varlen path is not exercised here; note
that LLaMA-Factory asserts one row per micro-batch for `neat_packing` under FlashAttention-2.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from vlmrecipes import packing
from vlmrecipes.plugins import registry

# tiny twin kind -> the template its recipes use
TEMPLATES = {"qwen2_5_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl_nothink", "qwen2_5_omni": "qwen2_omni",
             "multiway": "multiway_qwen"}
ATTENTIONS = {"eager": "disabled", "sdpa": "sdpa"}  # attention -> LLaMA-Factory's `flash_attn` value


def _sample(prompt: str, answer: str, image: Image.Image | None = None) -> dict:
    return {"_prompt": [{"role": "user", "content": prompt}], "_response": [{"role": "assistant", "content": answer}],
            "_system": "", "_tools": "", "_images": [image] if image else None, "_videos": None, "_audios": None}


def _samples(text_answer: str) -> list[dict]:
    """Three images of different sizes and aspect ratios, and one text-only sample."""
    return [
        _sample("<image>What colour is the square?", "The square is red.", Image.new("RGB", (56, 84), (200, 30, 30))),
        _sample("<image>Describe the picture.", "A blue band on white.", Image.new("RGB", (112, 56), (30, 30, 200))),
        _sample("<image>What is at the top?", "Green.", Image.new("RGB", (64, 140), (30, 180, 30))),
        _sample("Name a colour.", text_answer),
    ]


def _columns(samples: list[dict]) -> dict[str, list]:
    return {key: [sample[key] for sample in samples] for key in samples[0]}


class Twin:
    """LLaMA-Factory's training objects for one tiny twin and one attention implementation."""

    def __init__(self, model_path, kind: str, attention: str):
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_train_args
        from llamafactory.model import load_model, load_tokenizer

        self.recipe = {"model_name_or_path": str(model_path), "stage": "sft", "do_train": True,
                       "finetuning_type": "full", "dataset": "unused", "template": TEMPLATES[kind],
                       "output_dir": "unused", "report_to": "none", "flash_attn": ATTENTIONS[attention],
                       "image_max_pixels": 128 * 128}
        model_args, data_args, _, finetuning_args, _ = get_train_args({**self.recipe, "cutoff_len": 256})
        self.module = load_tokenizer(model_args)  # {"tokenizer", "processor"}
        self.template = get_template_and_fix_tokenizer(self.module["tokenizer"], data_args)
        self.model = load_model(self.module["tokenizer"], model_args, finetuning_args, is_trainable=True)
        self.model.eval()  # no dropout: packed and alone must see the same function
        self.attention = attention
        assert self.model.config._attn_implementation == attention

    def encode(self, samples: list[dict], cutoff_len: int, neat_packing: bool, packing: bool = False) -> list[dict]:
        """Dataset rows, as LLaMA-Factory's `get_dataset` maps them (packed rows with `neat_packing` or `packing`)."""
        from llamafactory.data.processor import (
            PackedSupervisedDatasetProcessor,
            SupervisedDatasetProcessor,
        )
        from llamafactory.hparams import get_train_args

        data_args = get_train_args({**self.recipe, "cutoff_len": cutoff_len, "neat_packing": neat_packing,
                                    "packing": packing or neat_packing})[1]
        processor_class = PackedSupervisedDatasetProcessor if data_args.packing else SupervisedDatasetProcessor
        processor = processor_class(template=self.template, data_args=data_args, **self.module)
        columns = processor.preprocess_dataset(_columns(samples))
        return [{key: columns[key][row] for key in columns} for row in range(len(columns["input_ids"]))]

    def collate(self, rows: list[dict], neat_packing: bool) -> dict[str, torch.Tensor]:
        from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
        from llamafactory.extras.constants import IGNORE_INDEX

        collator = SFTDataCollatorWith4DAttentionMask(
            template=self.template, model=self.model, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX,
            block_diag_attn=neat_packing, neat_packing=neat_packing, attn_implementation=self.attention,
            compute_dtype=torch.float32, **self.module)
        return collator([dict(row) for row in rows])

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.model(**inputs).logits  # (batch, row_length, vocab)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of one row, as transformers' causal-LM loss shifts it: (row_length - 1,)."""
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")


def _gradients(loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False) -> list[torch.Tensor]:
    """d loss / d param for each param; zeros where the loss does not reach it (Multiway's vision expert for a
    text-only sample run alone: in a pack, other samples' image tokens put it in the graph)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(param) if grad is None else grad for grad, param in zip(grads, params, strict=True)]


@pytest.fixture(scope="module")
def twins(tiny_model):
    registry.apply_patch("llamafactory.data.collator")
    made = {}

    def get(kind: str, attention: str) -> Twin:
        if (kind, attention) not in made:
            made[kind, attention] = Twin(tiny_model(kind), kind, attention)
        return made[kind, attention]

    return get


def _boundary_cutoff(twin: Twin) -> tuple[list[dict], int]:
    """The samples and a cutoff_len (not a multiple of 8) at which the first pack ends exactly at its last token.

    LLaMA-Factory packs into cutoff_len - 1 tokens plus at least one pad; its greedy knapsack puts the longest
    sample first and then the longest that still fits, so a capacity of longest + text-only fills pack one.
    """
    for extra in range(8):
        samples = _samples("Blue is a colour" + " too" * extra + ".")
        lengths = [len(row["input_ids"]) for row in twin.encode(samples, 4096, neat_packing=False)]
        cutoff_len = max(lengths) + lengths[-1] + 1
        if cutoff_len % 8:
            return samples, cutoff_len
    raise AssertionError("no answer length gives a cutoff_len that is not a multiple of 8")


def _sub_sequences(batch: dict, rows: list[dict]):
    """(row, start, end) of each real sample in the collated packed batch."""
    for row_index, row in enumerate(rows):
        boundaries = row["packing_params"]["sequence_boundaries"]
        real_tokens = int((batch["attention_mask"].new_tensor(row["attention_mask"]) > 0).sum())
        for start, end in itertools.pairwise(boundaries):
            if end <= real_tokens:  # the pack's own padding (attention 0) is the last sub-sequence
                yield row_index, start, end


def _assert_packed_as_alone(twin: Twin, samples: list[dict], cutoff_len: int) -> dict:
    """Pack `samples`, collate, run; check each sub-sequence against its sample run alone. Returns the packed batch."""
    packed_rows = twin.encode(samples, cutoff_len, neat_packing=True)
    packed = twin.collate(packed_rows, neat_packing=True)
    packed_logits = twin.logits(packed)
    params = [p for p in twin.model.parameters() if p.requires_grad]
    alone_rows = twin.encode(samples, cutoff_len, neat_packing=False)
    seen = []
    for row_index, start, end in _sub_sequences(packed, packed_rows):
        ids = packed["input_ids"][row_index, start:end].tolist()
        index = next(i for i, row in enumerate(alone_rows) if row["input_ids"] == ids)
        seen.append(index)
        alone = twin.collate([alone_rows[index]], neat_packing=False)
        length = end - start
        # 3-D (t, h, w) positions of the sub-sequence = the sample's own (rows 1..3; row 0 is the text position)
        assert packed["position_ids"].shape[0] == alone["position_ids"].shape[0] == 4
        assert torch.equal(packed["position_ids"][1:, row_index, start:end], alone["position_ids"][1:, 0, :length])
        if samples[index]["_images"]:  # image tokens really sit on a 2-D grid, not on 1-D positions
            height_width = packed["position_ids"][2:, row_index, start:end]
            assert (height_width[0] != height_width[1]).any()
        alone_logits = twin.logits(alone)
        assert torch.allclose(packed_logits[row_index, start:end], alone_logits[0, :length], atol=1e-6, rtol=0)

        packed_loss = token_losses(packed_logits[row_index, start:end], packed["labels"][row_index, start:end]).sum()
        alone_loss = token_losses(alone_logits[0, :length], alone["labels"][0, :length]).sum()
        assert torch.allclose(packed_loss, alone_loss, rtol=1e-6, atol=0)
        packed_grads = _gradients(packed_loss, params, retain_graph=True)
        alone_grads = _gradients(alone_loss, params)
        scale = max(grad.abs().max() for grad in alone_grads)
        for packed_grad, alone_grad in zip(packed_grads, alone_grads, strict=True):
            assert (packed_grad - alone_grad).abs().max() <= 1e-5 * scale
    assert sorted(seen) == list(range(len(samples)))  # every sample was found in the packs, once
    return packed


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("kind", TEMPLATES)
def test_packed_samples_train_as_if_alone(kind, attention, twins):
    twin = twins(kind, attention)
    samples, cutoff_len = _boundary_cutoff(twin)
    packed = _assert_packed_as_alone(twin, samples, cutoff_len)
    assert packed["input_ids"].shape[0] >= 2  # two packs: the batch dimension is exercised too
    # the collator pads each row to a multiple of 8 (and appends Omni's placeholder audio): issue 10782's case
    assert packed["input_ids"].shape[1] > cutoff_len and packed["input_ids"].shape[1] % 8 == 0


TEXT_ONLY = [_sample("Name a colour.", "Blue."), _sample("Say hello.", "Hello there, friend."),
             _sample("Count to three.", "One, two, three.")]


@pytest.mark.parametrize("kind", TEMPLATES)
def test_text_only_pack_trains_as_if_alone(kind, twins):
    """A batch with no image gets the collator's placeholder image: issue 10314's case."""
    _assert_packed_as_alone(twins(kind, "sdpa"), TEXT_ONLY, 203)


def _upstream(monkeypatch, method: str) -> None:
    from llamafactory.data.collator import MultiModalDataCollatorForSeq2Seq

    monkeypatch.setattr(MultiModalDataCollatorForSeq2Seq, method,
                        getattr(MultiModalDataCollatorForSeq2Seq, method).__wrapped__)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl", "multiway"])
def test_upstream_fails_where_the_patch_packs(kind, twins, monkeypatch):
    """Without plugins/packing.py: a cutoff_len of 8k+r crashes the collator, a text-only pack the forward."""
    twin = twins(kind, "sdpa")
    samples, cutoff_len = _boundary_cutoff(twin)
    _upstream(monkeypatch, "_compute_rope_position_ids_with_packing")
    with pytest.raises(ValueError, match="Merged position_ids shape mismatch"):
        twin.collate(twin.encode(samples, cutoff_len, neat_packing=True), neat_packing=True)
    text_only = twin.collate(twin.encode(TEXT_ONLY, 200, neat_packing=True), neat_packing=True)
    assert text_only["attention_mask"].shape[-1] > text_only["input_ids"].shape[1]  # the mask outgrew the input
    with pytest.raises(RuntimeError, match="must match the size"):
        twin.logits(text_only)


def test_upstream_refuses_to_pack_omni(twins, monkeypatch):
    twin = twins("qwen2_5_omni", "sdpa")
    _upstream(monkeypatch, "__call__")
    with pytest.raises(RuntimeError, match="Omni models are not supported for packed sequences"):
        twin.collate(twin.encode(TEXT_ONLY, 200, neat_packing=True), neat_packing=True)


def _perturbed_logits(twin: Twin, rows: list[dict], neat_packing: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Logits of the collated rows, and again with the first sample of row 0 changed: its answer tokens replaced and
    its image repainted (same size, so every boundary stays put). Returns (logits, perturbed logits, its end)."""
    end = rows[0]["packing_params"]["sequence_boundaries"][1] if neat_packing else None
    changed = [dict(row) for row in rows]
    answer = [i for i, label in enumerate(rows[0]["labels"][:end]) if label != -100]
    other_token = twin.module["tokenizer"].encode("z", add_special_tokens=False)[0]
    changed[0]["input_ids"] = [other_token if i in answer else token for i, token in enumerate(rows[0]["input_ids"])]
    first_image = rows[0]["images"][0]
    changed[0]["images"] = [Image.new("RGB", first_image.size, (250, 250, 10)), *rows[0]["images"][1:]]
    return twin.logits(twin.collate(rows, neat_packing)), twin.logits(twin.collate(changed, neat_packing)), end


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("kind", TEMPLATES)
def test_no_sample_sees_another_in_its_pack(kind, attention, twins):
    twin = twins(kind, attention)
    samples, cutoff_len = _boundary_cutoff(twin)
    rows = twin.encode(samples, cutoff_len, neat_packing=True)
    logits, perturbed, end = _perturbed_logits(twin, rows, neat_packing=True)
    assert not torch.allclose(logits[0, :end], perturbed[0, :end], atol=1e-3)  # the perturbation is real
    # Every other sample, in this pack and in the others, is untouched. (Padding positions are not compared: their
    # rows of the mask are empty, so they attend uniformly to the whole row; they carry no label.)
    others = torch.zeros(logits.shape[:2], dtype=torch.bool)
    for row_index, row in enumerate(rows):
        others[row_index, :sum(1 for value in row["attention_mask"] if value > 0)] = True
    others[0, :end] = False
    assert torch.allclose(logits[others], perturbed[others], atol=1e-6, rtol=0)


def test_plain_packing_lets_samples_see_each_other(twins):
    """`packing: true` without `neat_packing`: one causal sequence per pack, the next sample reads the previous one."""
    twin = twins("qwen2_5_vl", "sdpa")
    samples, cutoff_len = _boundary_cutoff(twin)
    neat_rows = twin.encode(samples, cutoff_len, neat_packing=True)
    first_end = neat_rows[0]["packing_params"]["sequence_boundaries"][1]
    rows = twin.encode(samples, cutoff_len, neat_packing=False, packing=True)
    assert rows[0]["input_ids"] == neat_rows[0]["input_ids"]  # the same packs, only the attention differs
    logits, perturbed, _ = _perturbed_logits(twin, [{**row, "packing_params": neat_rows[0]["packing_params"]}
                                                    for row in rows[:1]], neat_packing=False)
    assert not torch.allclose(logits[0, first_end:], perturbed[0, first_end:], atol=1e-3)


def test_batching_arithmetic_is_llamafactorys(twins):
    """`vlmrecipes.packing` (bench_packing, vlmr stats) lays out rows and padding as LLaMA-Factory's objects do."""
    twin = twins("qwen2_5_vl", "sdpa")
    samples, cutoff_len = _boundary_cutoff(twin)
    alone_rows = twin.encode(samples, cutoff_len, neat_packing=False)
    lengths = [len(row["input_ids"]) for row in alone_rows]
    packed_rows = twin.encode(samples, cutoff_len, neat_packing=True)
    layout = packing.packed(lengths, batch_size=len(packed_rows), cutoff_len=cutoff_len)
    assert (layout.rows, layout.useful_tokens) == (len(packed_rows), sum(lengths))
    assert layout.computed_tokens == twin.collate(packed_rows, neat_packing=True)["input_ids"].numel()
    plain = packing.unpacked(lengths, batch_size=len(lengths), cutoff_len=cutoff_len)
    assert plain.computed_tokens == twin.collate(alone_rows, neat_packing=False)["input_ids"].numel()


def test_stats_reports_padding_unpacked_and_packed(tmp_path, tiny_model, demo_data, capsys):
    import argparse

    from vlmrecipes.data_converters import validate

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_model('qwen2_5_vl')}\ntemplate: qwen2_vl\ndataset: demo_ct_train\n"
                      f"dataset_dir: {demo_data()}\ncutoff_len: 203\nper_device_train_batch_size: 4\n"
                      "image_max_pixels: 262144\n")
    assert validate.run_stats(argparse.Namespace(recipe=recipe, dataset_dir=None, overrides=[])) == 0
    unpacked_line, packed_line = capsys.readouterr().out.strip().splitlines()[-2:]
    assert unpacked_line.startswith("unpacked: 120 rows, padding ")  # the 120 demo CT records, padded per batch
    packed_rows = int(packed_line.split("packed: ")[1].split()[0])
    assert 0 < packed_rows < 120 and "computed tokens per useful token" in packed_line
