"""Overhead of the Multiway blocks: forward+backward time and parameters, Multiway vs plain Qwen2.5-VL.

Two shapes, random weights: the tiny twin's config and a 3B-shaped config (Qwen2.5-VL-3B-Instruct's real text
dims: hidden 2048, 16 heads / 2 KV heads, MLP 11008, vocab 151936; only --layers decoder layers, a 2-block ViT)
with the builder's default Multiway settings on --multiway-layers of them. Both models get the same token batch
(text + one image's worth of image-pad tokens fed as text ids, so both expert sets run); the vision tower is
skipped (it is identical in both). Prints one JSON object.

    python benchmarks/bench_multiway.py [--device cuda] [--layers 4] [--seq 512] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _configs(shape: str, layers: int, multiway_layers: list[int]):
    from transformers import Qwen2_5_VLConfig

    from vlmrecipes.plugins.multiway.build import multiway_config
    from vlmrecipes.plugins.multiway.tiny import TINY_MULTIWAY

    if shape == "tiny":
        text = dict(vocab_size=448, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
        rope = [2, 3, 3]
        fields = dict(TINY_MULTIWAY)
    else:
        text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=layers,
                    num_attention_heads=16, num_key_value_heads=2)
        rope = [16, 24, 24]
        fields = dict(multiway_layers=multiway_layers)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": rope}
    base = Qwen2_5_VLConfig(text_config=text, vision_config=dict(depth=2, hidden_size=64, num_heads=2,
                                                                  intermediate_size=128,
                                                                  out_hidden_size=text["hidden_size"]),
                            image_token_id=text["vocab_size"] - 2, video_token_id=text["vocab_size"] - 1)
    return base, multiway_config(base, **fields)


def _time(model, ids, steps: int, device: str) -> float:
    """Median seconds of one forward + backward of the LM loss."""
    times = []
    for _ in range(steps + 1):  # first step warms up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return sorted(times[1:])[len(times[1:]) // 2]


def bench(shape: str, args) -> dict:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vlmrecipes.plugins.multiway.build import convert

    base_config, mw_config = _configs(shape, args.layers, [int(i) for i in args.multiway_layers.split(",")])
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    base = Qwen2_5_VLForConditionalGeneration(base_config).to(dtype)
    fields = {k: getattr(mw_config, k) for k in ("multiway_layers", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                                   "v_head_dim", "n_shared_experts", "n_routed_experts",
                                                   "num_experts_per_tok", "moe_intermediate_size")}
    multiway = convert(base, **fields).to(args.device).train()
    base = base.to(args.device).train()
    seq = min(args.seq, 64) if shape == "tiny" else args.seq
    ids = torch.randint(0, base_config.text_config.vocab_size - 2, (args.batch, seq), device=args.device)
    ids[:, 8: 8 + seq // 4] = base_config.image_token_id  # a quarter of the tokens take the vision experts
    # open the gates: at zero they would still run the block, but the timing should not depend on it
    with torch.no_grad():
        for name, param in multiway.named_parameters():
            if name.endswith("_gate"):
                param.fill_(0.1)
    n_base = sum(p.numel() for p in base.parameters())
    n_mw = sum(p.numel() for p in multiway.parameters())
    t_base, t_mw = _time(base, ids, args.steps, args.device), _time(multiway, ids, args.steps, args.device)
    return {"shape": shape, "layers": base_config.text_config.num_hidden_layers,
            "multiway_layers": mw_config.multiway_layers, "batch": args.batch, "seq": seq,
            "params_base": n_base, "params_multiway": n_mw, "params_ratio": round(n_mw / n_base, 4),
            "fwd_bwd_s_base": round(t_base, 4), "fwd_bwd_s_multiway": round(t_mw, 4),
            "time_ratio": round(t_mw / t_base, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the 3B-shaped config")
    parser.add_argument("--multiway-layers", default="1,3", help="which of them get a Multiway block")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", default="tiny,3b")
    args = parser.parse_args()
    results = [bench(shape, args) for shape in args.shapes.split(",")]
    print(json.dumps({"device": args.device, "torch": torch.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
