"""Multiway Qwen2.5-VL (issue 6) on its tiny twin: identity at step 0, routing, KV cache, save/load/export, and
the real llamafactory-cli train / export / chat."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch
from helpers import REPO, cli_env, run_chat_cli, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model("multiway")


def _load(path):
    from transformers import AutoModelForImageTextToText

    import vlmrecipes.plugins.registry as registry

    registry.register_all()
    return AutoModelForImageTextToText.from_pretrained(path).eval()


def _open_gates(model, value: float = 0.5):
    """Open the zero gates so the Multiway branch contributes (tests of the new path itself)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("attn_gate", "ffn_gate")):
                param.fill_(value)
    return model


def _inputs(path, texts=("What color is the shape?", "Describe it in a few words please.")):
    """A padded batch: each row one 56x56 image (4 image tokens) and a question of a different length."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}], add_generation_prompt=True,
        tokenize=False) for t in texts]
    images = [Image.new("RGB", (56, 56), (200, 40 * i, 30)) for i in range(len(texts))]
    processor.tokenizer.padding_side = "right"
    return processor(text=prompts, images=images, return_tensors="pt", padding=True)


def test_identity_at_init(tiny):
    """Right after `vlmr build multiway` the logits equal the base Qwen2.5-VL's (images, text, padding)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny / "base").eval()
    model = _load(tiny)
    inputs = _inputs(tiny)
    assert (inputs["attention_mask"] == 0).any(), "the batch should be padded"
    with torch.no_grad():
        diff = (base(**inputs).logits - model(**inputs).logits).abs().max().item()
    assert diff < 1e-5
    gates = [p for n, p in model.named_parameters() if n.endswith("_gate")]
    assert gates and all(float(g.abs().max()) == 0.0 for g in gates)


def test_routing_by_modality_topk_and_aux_loss(tiny):
    from vlmrecipes.plugins.multiway.modeling_multiway import MultiwayRouting

    model = _open_gates(_load(tiny))
    inputs = _inputs(tiny)
    routing = MultiwayRouting(records=[])
    with torch.no_grad():
        out = model(**inputs, multiway_routing=routing)
    ids, mask = inputs["input_ids"].flatten(), inputs["attention_mask"].flatten()
    vision = (ids == model.config.image_token_id) | (ids == model.config.video_token_id)
    by_modality = {r.modality: r for r in routing.records}
    assert set(by_modality) == {"text", "vision"}
    assert set(by_modality["vision"].tokens.tolist()) == set(vision.nonzero().flatten().tolist())
    assert set(by_modality["text"].tokens.tolist()) == set((~vision & (mask == 1)).nonzero().flatten().tolist())
    k, n_experts = model.config.num_experts_per_tok, model.config.n_routed_experts
    for record in routing.records:
        assert record.experts.shape == (record.tokens.numel(), k)
        assert record.experts.min() >= 0 and record.experts.max() < n_experts
        assert all(len(set(row)) == k for row in record.experts.tolist())  # k distinct experts per token
    aux = out.aux_loss
    assert torch.isfinite(aux) and aux.item() > 0

    # padding changes nothing for the real tokens: row 0 alone equals row 0 of the padded batch
    length = int(inputs["attention_mask"][0].sum())
    alone = {k: v for k, v in inputs.items() if k not in ("pixel_values", "image_grid_thw")}
    alone = {k: v[:1, :length] for k, v in alone.items()}
    n_patches = int(inputs["image_grid_thw"][0].prod())
    with torch.no_grad():
        single = model(**alone, pixel_values=inputs["pixel_values"][:n_patches],
                       image_grid_thw=inputs["image_grid_thw"][:1]).logits
    assert (single[0] - out.logits[0, :length]).abs().max().item() < 1e-4


def test_aux_loss_joins_the_training_loss(tiny):
    model = _open_gates(_load(tiny)).train()
    inputs = _inputs(tiny)
    out = model(**inputs, labels=inputs["input_ids"])
    model.eval()
    lm_only = model(**inputs, labels=inputs["input_ids"]).loss
    expected = lm_only + model.config.router_aux_loss_coef * out.aux_loss
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    router = next(p for n, p in model.named_parameters() if n.endswith("moe.vision.router.weight"))
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_kv_cache_generation_equals_no_cache(tiny):
    model = _open_gates(_load(tiny))
    inputs = _inputs(tiny, texts=("What color is the shape?",))
    kwargs = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
    cached = model.generate(**inputs, use_cache=True, **kwargs)
    uncached = model.generate(**inputs, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_save_and_reload_with_remote_code_only(tiny, tmp_path):
    """save_pretrained -> plain transformers, trust_remote_code=True, plugin disabled: identical logits."""
    model = _open_gates(_load(tiny))
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"].startswith("modeling_multiway.")
    assert (tmp_path / "model" / "modeling_multiway.py").exists()
    inputs = _inputs(tiny)
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForImageTextToText\n"
        "assert 'vlmrecipes' not in sys.modules\n"
        f"m = AutoModelForImageTextToText.from_pretrained(r'{tmp_path / 'model'}', trust_remote_code=True).eval()\n"
        "assert m.__class__.__module__.startswith('transformers_modules'), m.__class__.__module__\n"
        f"inputs = torch.load(r'{tmp_path / 'inputs.pt'}')\n"
        f"torch.save(m(**inputs).logits.detach(), r'{tmp_path / 'logits.pt'}')\n"
    )
    run_cli([sys.executable, "-c", script], env=cli_env(VLMR_NO_AUTOLOAD="1", HF_HOME=str(tmp_path / "hf")))
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


# What a user may have imported before loading a Multiway checkpoint; transformers imports its Auto modules from the
# middle of each of these, which is when the plugin's hooks fire.
IMPORTED_FIRST = ["pass", "from transformers import Qwen2_5_VLConfig",
                  "import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
                  "from transformers import PreTrainedModel", "import llamafactory.model.loader"]


@pytest.mark.parametrize("first", IMPORTED_FIRST)
def test_plugin_loads_checkpoints_without_remote_code_whatever_was_imported_first(tiny, first):
    """The installed plugin alone resolves model_type multiway_qwen2_5_vl: no trust_remote_code, no import of ours."""
    script = (
        f"{first}\n"
        "from transformers import AutoConfig, AutoModelForImageTextToText\n"
        f"config = AutoConfig.from_pretrained(r'{tiny}')\n"
        f"model = AutoModelForImageTextToText.from_pretrained(r'{tiny}')\n"
        "print('RESULT', type(config).__module__, type(model).__module__)\n"
    )
    proc = run_cli([sys.executable, "-c", script])
    result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    assert result == ["vlmrecipes.plugins.multiway.configuration_multiway",
                      "vlmrecipes.plugins.multiway.modeling_multiway"]


def test_config_validation():
    from vlmrecipes.plugins.multiway.configuration_multiway import MultiwayQwen2_5_VLConfig

    with pytest.raises(ValueError, match="multiway_layers"):
        MultiwayQwen2_5_VLConfig(multiway_layers=[999])
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MultiwayQwen2_5_VLConfig(n_routed_experts=2, num_experts_per_tok=3)


def test_compose_is_the_model_build_writes(tiny):
    """The record's `compose` (what `vlmr realsize` builds on the meta device for a `vlmr build multiway` line) has
    the parameters of the twin `build` wrote, and its base part is the base's parameters."""
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from vlmrecipes import build as build_command
    from vlmrecipes import realsize
    from vlmrecipes.plugins.architecture import StoredCheckpoint
    from vlmrecipes.plugins.multiway.build import compose
    from vlmrecipes.plugins.multiway.tiny import TINY_MULTIWAY

    parser = argparse.ArgumentParser()
    build_command.add_arguments(parser)
    flags = [text for name, value in TINY_MULTIWAY.items() if name != "multiway_layers"
             for text in (f"--{name.replace('_', '-')}", str(value))]
    layers = ",".join(map(str, TINY_MULTIWAY["multiway_layers"]))
    args = parser.parse_args(["multiway", "--base", str(tiny / "base"), "--out", "unused", "--layers", layers, *flags])
    composed = compose(args, lambda model_id: StoredCheckpoint(AutoConfig.from_pretrained(model_id)))

    meta = realsize.build_on_meta(composed.config)
    assert {n: p.shape for n, p in meta.named_parameters()} == {n: p.shape for n, p in _load(tiny).named_parameters()}
    [part] = composed.parts
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny / "base")
    assert realsize.count_parameters(meta, where=part.owns) == realsize.count_parameters(base)


@pytest.mark.slow
def test_llamafactory_train_changes_only_multiway_then_export_and_chat(tiny, tmp_path, demo_data):
    """The freeze recipe through `vlmr smoke` (llamafactory-cli train + predict + export), then chat."""
    from safetensors.torch import load_file

    demo_data()
    out = tmp_path / "smoke"
    recipe = REPO / "recipes" / "general_vqa" / "multiway_qwen2_5_vl_3b_freeze.yaml"
    run_cli(["vlmr", "smoke", str(recipe), "--out", str(out), "--steps", "2"], timeout=900)
    before = load_file(REPO / ".cache" / "tiny" / "multiway-seed0" / "model.safetensors")
    after = load_file(out / "train" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))}
    assert changed and all(".multiway." in k for k in changed), sorted(changed)[:5]
    assert any(k.endswith("_gate") for k in changed)

    run_chat_cli(out / "export", "multiway_qwen", "What color is the shape?")
