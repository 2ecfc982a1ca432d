"""`vlmr plan RECIPE`: predicted peak GPU memory per device of a training recipe as written, and whether it fits.

The model is the recipe's real-size model on the meta device (`vlmrecipes.realsize`: parameter counts, what is
trainable, LoRA adapters, image tokens). Memory is the sum of the terms below, per device, at the recipe's
`per_device_train_batch_size` (b) and a batch of full `cutoff_len` sequences (s tokens, image tokens included:
LLaMA-Factory pads to the longest sample, so this is the worst case). P parameters, T of them trainable, F = P - T
frozen; N devices (`--nproc`, default the `NPROC_PER_NODE=` of the recipe's header command, else 1); "half" is
2 bytes under bf16/fp16 (the recipes' `bf16: true`), else 4.

Model states (ZeRO paper: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models", section 3: mixed-precision Adam keeps 2 + 2 + 12 bytes per parameter: half-precision parameters and
gradients, and K = 12 bytes of fp32 master weights, momentum and variance; stage 1 partitions the 12 over N,
stage 2 also the gradients, stage 3 also the parameters; offload moves optimizer states / parameters to CPU RAM):
  weights      no DeepSpeed: 2F + 4T (frozen half precision; LLaMA-Factory's init_adapter upcasts the trainable
               parameters to fp32, llamafactory/model/adapter.py cast_trainable_params_to_fp32: they are the
               master weights); ZeRO-1/2: half * P (DeepSpeed casts the module to bf16); ZeRO-3: half * P / N
               (0 with offload_param)
  autocast     no DeepSpeed, bf16: 2T, the bf16 copies torch.autocast caches of fp32 weights that require grad
               (cache_enabled, alive for the forward pass)
  gradients    no DeepSpeed: 4T (fp32, like their parameters); ZeRO-1: half * T; ZeRO-2/3: half * T / N
  optimizer    AdamW (LLaMA-Factory's default adamw_torch): no DeepSpeed 8T (exp_avg + exp_avg_sq in fp32; the
               fp32 master is the parameter itself); ZeRO: 12T / N (0 with offload_optimizer)
  ddp buckets  no DeepSpeed, N > 1: 4T (torch DDP reduces gradients through flat buckets of the same size;
               the HF Trainer does not set gradient_as_bucket_view)
  zero buffers from the recipe's DeepSpeed JSON ("auto" filled as transformers does: reduce_bucket_size = h^2,
               stage3_prefetch_bucket_size = 0.9 h^2): ZeRO-1/2 half * (allgather_bucket_size + reduce_bucket_size);
               ZeRO-3 half * (reduce + prefetch bucket + 2 x the largest decoder layer gathered)

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", section 4:
a GPT layer keeps s*b*h*(34 + 5*a*s/h) bytes of 16-bit activations for its backward pass; the 5as/h part is the
attention score/softmax matrices, which flash attention (`flash_attn: fa2`, and SDPA's bf16 kernels) never stores;
with full recomputation a layer keeps only its input, 2*s*b*h bytes). Written out for these models (SwiGLU MLP of
width I, grouped-query attention with h_kv = kv_heads * head_dim, no dropout), the bytes a decoder layer keeps per
token are: two RMSNorm inputs 4h, the QKV projection input 2h, Q/K/V for the attention kernel 2h + 4h_kv, the
o_proj input 2h, the MLP input 2h, and gate, up, act(gate), act(gate)*up 8I: e_layer = 12h + 4h_kv + 8I
(for a GPT layer, 4h GeLU MLP with dropout masks, the same bookkeeping gives Korthikanti's 34h).
  lm layers    no gradient checkpointing: L * s*b * e_layer (+ 5*a*s^2*b per layer with eager attention);
               with it (LLaMA-Factory enables it unless disable_gradient_checkpointing): L * 2*s*b*h layer inputs
               + one layer recomputed in the backward pass, s*b*e_layer
  lora         lora_dropout > 0: each wrapped module keeps its dropped-out input (2 bytes) and mask (1 byte):
               3 * s*b * (sum of wrapped input widths) for the layers whose activations are kept
  logits       10 * s*b*V: the bf16 lm_head output (2), its fp32 upcast in transformers' ForCausalLMLoss (4) and
               the fp32 log-softmax cross_entropy saves (4)
  vision       only a trainable tower keeps activations (a frozen one has no input or weight requiring grad):
               the same per-layer bookkeeping on the tower's patches (b images of p patches; 4I for its non-gated
               GELU MLPs), inputs only under gradient checkpointing
Multiway blocks are counted in their decoder layer's parameters; their own activations exist only inside the
recomputed layer under gradient checkpointing and are not modelled.
Device overhead (assumptions until calibrated on a GPU): the CUDA context, 0.6 GiB, and the caching allocator's
fragmentation, 10% of the allocated peak.

Not yet calibrated on a GPU: the figures are a model of the memory, not measurements.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from vlmrecipes import realsize
from vlmrecipes import recipes as recipe_files
from vlmrecipes.paths import HOME
from vlmrecipes.recipes import parse_overrides  # the one `key=value` parser (tests, benchmarks use it here)

GIB = 1024 ** 3
CUDA_CONTEXT_BYTES = int(0.6 * GIB)
ALLOCATOR_FRAGMENTATION = 0.10
CALIBRATION = "not yet calibrated on a GPU"
# cards a table names as "fits", GiB of device memory as the driver reports them (NVIDIA's "80 GB" H100: 79.6 GiB)
CARDS_GIB = {"16 GB": 15.6, "24 GB": 23.6, "40 GB": 39.4, "48 GB": 47.5, "80 GB": 79.1, "141 GB": 139.8}
_NPROC = re.compile(r"NPROC_PER_NODE=(\d+)")


@dataclass(frozen=True)
class Zero:
    """The DeepSpeed ZeRO settings a recipe's `deepspeed:` JSON gives (stage 0: no DeepSpeed)."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    allgather_bucket: float = 5e8
    reduce_bucket: float | str = 5e8
    prefetch_bucket: float | str = "auto"
    max_live_parameters: float = 1e9
    source: str = ""

    @classmethod
    def from_recipe(cls, recipe: dict, recipe_path: Path) -> "Zero":
        name = recipe.get("deepspeed")
        if not name:
            return cls()
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = HOME / name
        if not path.exists():
            raise FileNotFoundError(f"{recipe_path}: deepspeed config {name!r} not found (relative to the working "
                                    f"directory or {HOME})")
        zero = json.loads(path.read_text()).get("zero_optimization", {})
        device = lambda key: zero.get(key, {}).get("device", "none") not in ("none", None)  # noqa: E731
        return cls(
            stage=int(zero.get("stage", 0)),
            offload_optimizer=device("offload_optimizer"),
            offload_param=device("offload_param"),
            allgather_bucket=float(zero.get("allgather_bucket_size", 5e8)),
            reduce_bucket=zero.get("reduce_bucket_size", 5e8),
            prefetch_bucket=zero.get("stage3_prefetch_bucket_size", "auto"),
            max_live_parameters=float(zero.get("stage3_max_live_parameters", 1e9)),
            source=str(name),
        )

    def describe(self) -> str:
        if not self.stage:
            return "no DeepSpeed"
        offload = [what for what, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on]
        return f"ZeRO-{self.stage}" + (f" + CPU offload of {' and '.join(offload)}" if offload else "")


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    formula: str


@dataclass
class Plan:
    """A recipe's memory model; `terms(b)` gives the per-device bytes at micro-batch b."""

    recipe: Path
    size: realsize.RealSize
    recipe_args: dict
    nproc: int
    zero: Zero
    micro_batch: int
    seq_len: int
    half: int  # bytes of the compute dtype
    gradient_checkpointing: bool
    attention: str

    # -- model shapes -------------------------------------------------------------------------------------
    @property
    def text(self):
        return getattr(self.size.config, "text_config", self.size.config)

    @property
    def vision(self):
        return getattr(self.size.config, "vision_config", None)

    def _layer_bytes_per_token(self, hidden: int, kv_hidden: int, intermediate: int, gated: bool) -> int:
        return 12 * hidden + 4 * kv_hidden + (8 if gated else 4) * intermediate

    # -- terms -------------------------------------------------------------------------------------------
    def model_state_terms(self) -> list[Term]:
        P, T = self.size.total_params, self.size.trainable_params
        F, N, z, half = P - T, self.nproc, self.zero, self.half
        if z.stage == 0:
            terms = [
                Term("weights", half * F + 4 * T, f"{half} x {F:,} frozen + 4 x {T:,} trainable (fp32)"),
                Term("gradients", 4 * T, f"4 x {T:,} trainable"),
                Term("optimizer", 8 * T, f"8 x {T:,} (AdamW moments)"),
            ]
            if half == 2:
                terms.insert(1, Term("autocast copies", 2 * T, f"2 x {T:,} trainable (bf16 casts)"))
            if N > 1:
                terms.append(Term("ddp buckets", 4 * T, f"4 x {T:,} trainable"))
            return terms
        shards = N if z.stage == 3 else 1
        if z.stage == 3 and z.offload_param:
            weights = Term("weights", 0, f"offloaded: {half} x {P:,} / {N} in CPU RAM")
        else:
            weights = Term("weights", half * P / shards, f"{half} x {P:,}" + (f" / {N}" if shards > 1 else ""))
        if z.offload_optimizer:
            optimizer = Term("optimizer", 0, f"offloaded: 12 x {T:,} / {N} in CPU RAM")
        else:
            optimizer = Term("optimizer", 12 * T / N, f"12 x {T:,} / {N} (fp32 master + AdamW moments)")
        grad_shards = N if z.stage >= 2 else 1
        gradients = Term("gradients", half * T / grad_shards,
                         f"{half} x {T:,}" + (f" / {N}" if grad_shards > 1 else ""))
        return [weights, gradients, optimizer, self._zero_buffers()]

    def _zero_buffers(self) -> Term:
        h, z, half = self.text.hidden_size, self.zero, self.half
        auto = lambda value, default: default if value == "auto" else float(value)  # noqa: E731
        reduce = auto(z.reduce_bucket, h * h)
        if z.stage < 3:
            return Term("zero buffers", half * (z.allgather_bucket + reduce),
                        f"{half} x ({z.allgather_bucket:.3g} allgather + {reduce:.3g} reduce bucket)")
        prefetch = auto(z.prefetch_bucket, 0.9 * h * h)
        gathered = min(z.max_live_parameters, 2 * self.size.largest_layer_params)
        return Term("zero buffers", half * (reduce + prefetch + gathered),
                    f"{half} x ({reduce:.3g} reduce + {prefetch:.3g} prefetch + {gathered:.3g} gathered params)")

    def activation_terms(self, b: int) -> list[Term]:
        text, s = self.text, self.seq_len
        h, L, V, a = text.hidden_size, text.num_hidden_layers, text.vocab_size, text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or h // a
        kv_hidden = (getattr(text, "num_key_value_heads", None) or a) * head_dim
        per_token = self._layer_bytes_per_token(h, kv_hidden, text.intermediate_size, gated=True)
        scores = 5 * a * s * s * b if self.attention == "eager" else 0
        layer = s * b * per_token + scores
        if self.gradient_checkpointing:
            lm = Term("lm activations", L * 2 * s * b * h + layer,
                      f"{L} layers x 2*s*b*h + one recomputed layer (s*b*{per_token:,})")
        else:
            lm = Term("lm activations", L * layer, f"{L} layers x s*b*{per_token:,}"
                      + (" + 5*a*s^2*b (eager attention)" if scores else ""))
        terms = [lm]
        if self.size.lora_in_features and self.size.lora_dropout > 0:
            kept_layers = 1 if self.gradient_checkpointing else L
            widths = self.size.lora_in_features * kept_layers // L
            terms.append(Term("lora dropout", 3 * s * b * widths, f"3 x s*b x {widths:,} wrapped input widths"))
        terms.append(Term("logits + loss", 10 * s * b * V, f"10 x s*b x {V:,} vocab"))
        if self.size.vision_trainable and self.vision is not None:
            terms.append(self._vision_term(b))
        return terms

    def _vision_term(self, b: int) -> Term:
        vision = self.vision
        h = vision.hidden_size
        depth = getattr(vision, "depth", None) or vision.num_hidden_layers
        gated = getattr(vision, "hidden_act", "") == "silu"  # Qwen2.5-VL's SwiGLU blocks; SigLIP/Qwen3-VL: GELU
        per_token = self._layer_bytes_per_token(h, h, vision.intermediate_size, gated)
        tokens = b * self.size.vision_patches
        if self.gradient_checkpointing:
            return Term("vision activations", depth * 2 * tokens * h + tokens * per_token,
                        f"{depth} blocks x 2 x {tokens:,} patches x {h} + one recomputed block")
        return Term("vision activations", depth * tokens * per_token, f"{depth} blocks x {tokens:,} patches x "
                                                                       f"{per_token:,}")

    def terms(self, b: int | None = None) -> list[Term]:
        return self.model_state_terms() + self.activation_terms(b or self.micro_batch)

    def allocated(self, b: int | None = None) -> float:
        """Predicted torch.cuda.max_memory_allocated per device."""
        return sum(term.bytes for term in self.terms(b))

    def device_total(self, b: int | None = None) -> float:
        """Predicted device memory in use at the peak: allocated + fragmentation + CUDA context."""
        return self.allocated(b) * (1 + ALLOCATOR_FRAGMENTATION) + CUDA_CONTEXT_BYTES

    def fits(self, gpu_gib: float, b: int | None = None) -> bool:
        return self.device_total(b) <= gpu_gib * GIB

    def largest_micro_batch(self, gpu_gib: float, limit: int = 4096) -> int:
        """The largest per-device micro-batch that fits `gpu_gib` (0: not even 1). Memory grows with b."""
        if not self.fits(gpu_gib, 1):
            return 0
        low, high = 1, limit
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.fits(gpu_gib, mid) else (low, mid - 1)
        return low

    def smallest_card(self) -> str | None:
        return next((card for card, gib in CARDS_GIB.items() if self.fits(gib)), None)


def header_nproc(recipe_path: Path) -> int:
    """The NPROC_PER_NODE of the recipe's header command (the README's command), else 1."""
    for line in Path(recipe_path).read_text().splitlines():
        if not line.startswith("#"):
            break
        match = _NPROC.search(line)
        if match:
            return int(match.group(1))
    return 1


def plan(recipe_path: str | Path, nproc: int | None = None, overrides: dict | None = None) -> Plan:
    recipe_path = Path(recipe_path)
    recipe = recipe_files.load(recipe_path, overrides)
    size = realsize.measure(recipe_path, overrides)
    model_args, _, training_args, _ = realsize.parse_recipe_args(recipe)
    half = 2 if (training_args.bf16 or training_args.fp16) else 4
    return Plan(
        recipe=recipe_path,
        size=size,
        recipe_args=recipe,
        nproc=nproc or header_nproc(recipe_path),
        zero=Zero.from_recipe(recipe, recipe_path),
        micro_batch=training_args.per_device_train_batch_size,
        seq_len=recipe.get("cutoff_len", 2048),
        half=half,
        gradient_checkpointing=not model_args.disable_gradient_checkpointing,
        attention=str(model_args.flash_attn),
    )


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def render(p: Plan, gpu_gib: float) -> str:
    size = p.size
    lines = [
        f"{p.recipe}: {size.model_label} ({size.finetuning_type}), {p.zero.describe()}, {p.nproc} GPU(s)",
        f"  {size.total_params:,} parameters, {size.trainable_params:,} trainable; micro-batch {p.micro_batch} x "
        f"{p.seq_len} tokens (cutoff_len, {size.image_tokens} image tokens each); gradient checkpointing "
        f"{'on' if p.gradient_checkpointing else 'off'}; attention {p.attention}",
        "",
        f"  {'term':<20} {'GiB':>7}  formula (bytes, per device)",
    ]
    for term in p.terms():
        lines.append(f"  {term.name:<20} {_gib(term.bytes):>7}  {term.formula}")
    allocated, total = p.allocated(), p.device_total()
    lines += [
        f"  {'allocated peak':<20} {_gib(allocated):>7}  predicted torch.cuda.max_memory_allocated",
        f"  {'device total':<20} {_gib(total):>7}  + {ALLOCATOR_FRAGMENTATION:.0%} allocator fragmentation + "
        f"{_gib(CUDA_CONTEXT_BYTES)} GiB CUDA context",
        "",
        f"  {gpu_gib:g} GiB card: {'fits' if total <= gpu_gib * GIB else 'does NOT fit'} at micro-batch "
        f"{p.micro_batch}; largest micro-batch that fits: {p.largest_micro_batch(gpu_gib)}",
        f"  ({CALIBRATION})",
    ]
    return "\n".join(lines)


def memory_cell(p: Plan) -> str:
    """The README table's memory figure: per-device GiB, the card it fits, the GPU count and ZeRO stage."""
    per_device = f"{_gib(p.device_total())} GiB"
    card = p.smallest_card()
    where = f"{p.nproc} x {card}" if card else f"{p.nproc} x more than {max(CARDS_GIB)}"
    return f"{per_device} ({where}{', ' + p.zero.describe() if p.zero.stage else ''})"


def header_line(p: Plan) -> str:
    """The `# GPU memory` comment a recipe header carries (kept equal to the planner by tests/test_plan.py)."""
    return (f"# GPU memory (vlmr plan, not GPU-calibrated): {memory_cell(p)} per device; micro-batch "
            f"{p.micro_batch} x {p.seq_len} tokens")


def _method(p: Plan) -> str:
    args, size = p.recipe_args, p.size
    if size.finetuning_type == "lora":
        return "LoRA" + "".join(f" + {module}" for module in size.modules_to_save)
    if size.finetuning_type == "freeze":
        return f"freeze: {args.get('freeze_trainable_modules', 'all')} trained"
    frozen = [part for flag, part in (("freeze_vision_tower", "vision tower"), ("freeze_language_model", "LM"),
                                      ("freeze_multi_modal_projector", "projector")) if args.get(flag)]
    return "full" + (f", {' + '.join(frozen)} frozen" if frozen else "")


def _task(recipe_path: Path) -> str:
    first = Path(recipe_path).read_text().splitlines()[0].lstrip("#").strip()
    return first.split(":")[0]


def _command(p: Plan) -> str:
    path = Path("recipes", *p.recipe.resolve().parts[-2:])  # recipes/<task>/<file>, wherever the collection is
    launcher = f"FORCE_TORCHRUN=1 NPROC_PER_NODE={p.nproc} " if p.nproc > 1 else ""
    return f"`{launcher}llamafactory-cli train {path}`"


README_HEADER = ("| task | model | method | GPU memory (planned) | command |\n"
                 "| --- | --- | --- | --- | --- |")


def readme_table(plans: list[Plan] | None = None) -> str:
    """The README recipe table, one row per training recipe, memory from the planner."""
    plans = plans if plans is not None else [plan(path) for path in recipe_files.training_recipes()]
    rows = [f"| {_task(p.recipe)} | {p.size.model_label} | {_method(p)} | {memory_cell(p)} | {_command(p)} |"
            for p in plans]
    return "\n".join([README_HEADER, *rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", type=Path, help="training recipe")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe keys to override")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="GiB of the card to check (default 80)")
    parser.add_argument("--nproc", type=int, help="GPUs (default: NPROC_PER_NODE of the recipe's header, else 1)")
    parser.add_argument("--details", action="store_true", help="also print `vlmr realsize`'s model report")
    parser.add_argument("--readme-table", action="store_true", help="print the README's recipe table and exit")
    # `vlmr plan RECIPE --gpu-memory 40 cutoff_len=512`: overrides may follow the options, as with llamafactory-cli
    parser.parse_args = parser.parse_intermixed_args


def run(args: argparse.Namespace) -> int:
    realsize.quiet_llamafactory()
    if args.readme_table:
        print(readme_table())
        return 0
    if args.recipe is None:
        raise SystemExit("vlmr plan: give a training recipe (or --readme-table)")
    p = plan(args.recipe, args.nproc, parse_overrides(args.overrides))
    if args.details:
        print(realsize.report(p.size) + "\n")
    print(render(p, args.gpu_memory))
    return 0 if p.fits(args.gpu_memory) else 1
