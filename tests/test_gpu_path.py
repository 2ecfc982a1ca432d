"""The GPU-only path, as far as a CPU proves it: transformers 5.6.0's flash-attention crash and its fix."""

from __future__ import annotations

import json
import subprocess

from helpers import BIN, REPO, cli_env, run_cli

# A Qwen2.5-VL forward with `flash_attention_2` selected, as LLaMA-Factory's `flash_attn: fa2` selects it: the
# vision blocks and decoder layers look the attention function up in transformers' dispatch table. flash-attn
# itself needs CUDA, so its entry point `_flash_attention_forward` alone is replaced by a recorder of its inputs.
# Then transformers' wrapper is called directly with an attention-sink tensor (what gpt-oss passes).
FA2_FORWARD = """
import json, sys
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
from transformers.integrations import flash_attention

kernel_calls = []

def kernel(query, key, value, attention_mask, **kwargs):  # query (batch, seq, heads, head_dim), as flash-attn's
    s_aux = kwargs.get("s_aux")
    kernel_calls.append(None if s_aux is None else str(s_aux.dtype))
    return torch.zeros_like(query)

flash_attention._flash_attention_forward = kernel
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(sys.argv[1])
model.config._attn_implementation = "flash_attention_2"  # also sets the vision and text sub-configs
processor = AutoProcessor.from_pretrained(sys.argv[1])
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=[text], images=[Image.new("RGB", (56, 56), (200, 30, 30))], return_tensors="pt")
try:
    model(**inputs)
    error = None
except AttributeError as err:
    error = str(err)
forward_calls, kernel_calls[:] = list(kernel_calls), []

attention = model.model.language_model.layers[0].self_attn
query = torch.randn(1, 4, 3, 16, dtype=torch.bfloat16)  # (batch, heads, seq, head_dim)
sink = torch.zeros(4)  # one learned sink logit per head, float32 as gpt-oss keeps it
flash_attention.flash_attention_forward(attention, query, query, query, None, s_aux=sink)
print("RESULT", json.dumps({"error": error, "forward": forward_calls, "with_sink": kernel_calls,
                            "layers": model.config.vision_config.depth + model.config.text_config.num_hidden_layers}))
"""


def _fa2_forward(model, **env: str) -> dict:
    proc = subprocess.run([str(BIN / "python"), "-c", FA2_FORWARD, str(model)], env=cli_env(**env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])


def test_fa2_forward_of_a_sinkless_model_reaches_the_kernel_with_no_sink(tiny_model):
    model = tiny_model("qwen2_5_vl")
    # Upstream 5.6.0: the first attention call raises before the kernel is reached.
    upstream = _fa2_forward(model, VLMR_NO_AUTOLOAD="1")
    assert upstream["error"] == "'NoneType' object has no attribute 'to'"
    assert upstream["forward"] == []
    # With the plugin loaded by the autoload hook: every vision block and decoder layer reaches the kernel with
    # s_aux=None, and a sink tensor still arrives converted to the query's dtype.
    fixed = _fa2_forward(model)
    assert fixed["error"] is None
    assert fixed["forward"] == [None] * fixed["layers"]
    assert fixed["with_sink"] == ["torch.bfloat16"]


# LLaMA-Factory's own loader with `flash_attn: fa2`, on the tiny twin of the same class: what a recipe's model runs.
LLAMAFACTORY_LOAD = """
import sys
from llamafactory.hparams import FinetuningArguments, ModelArguments
from llamafactory.model import load_model, load_tokenizer
model_args = ModelArguments(model_name_or_path=sys.argv[1], flash_attn="fa2")
model = load_model(load_tokenizer(model_args)["tokenizer"], model_args, FinetuningArguments())
print("RESULT", model.config._attn_implementation)
"""


def test_doctor_reports_the_attention_each_recipe_really_gets(tiny_model):
    from vlmrecipes import recipes

    proc = run_cli(["vlmr", "doctor"])
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert lines["cuda"].split()[:2] == ["cuda", "no"]
    assert "no CUDA: bf16 recipes need use_cpu" in lines["bf16"]
    assert lines["flash-attn"].split()[1:3] == ["not", "installed:"]
    assert lines["liger-kernel"].split()[1:] == ["not", "installed"]

    loaded = subprocess.run([str(BIN / "python"), "-c", LLAMAFACTORY_LOAD, str(tiny_model("qwen2_5_vl"))],
                            env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    runs = next(line for line in loaded.stdout.splitlines() if line.startswith("RESULT")).split()[1]
    fa2_recipes = [p for p in recipes.training_recipes() if recipes.load(p).get("flash_attn") == "fa2"]
    assert fa2_recipes  # 10 of our 15 training recipes ask for FlashAttention-2
    for path in fa2_recipes:
        line = lines[str(path.relative_to(REPO))]
        assert line.split()[1:4] == ["fa2", "->", runs], line
        assert line.endswith("(LLaMA-Factory: FlashAttention-2 is not installed.)"), line
