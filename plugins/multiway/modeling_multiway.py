"""Multiway Qwen2.5-VL: Qwen2.5-VL (arXiv:2502.13923) with Multiway blocks after chosen decoder layers.

A Multiway block follows VLMo's multiway transformer (arXiv:2111.02358) and MoME (arXiv:2407.12709): every token
goes through one shared attention, then through a feed-forward path chosen by its modality.

- Shared attention: DeepSeek-V2's Multi-head Latent Attention (arXiv:2405.04434, section 2.1). Keys and values
  are decompressed from one low-rank latent per token (the KV cache stores that latent and the decoupled rotary
  key, not per-head keys/values); the rotary part uses Qwen2.5-VL's M-RoPE cos/sin of the layer it sits in.
- Modality-routed feed-forward: DeepSeekMoE (arXiv:2401.06066) per modality, shared experts plus top-k routed
  fine-grained experts. Image/video tokens (the config's `image_token_id`/`video_token_id`, or
  `mm_token_type_ids`) go to the vision mixture, text tokens to the text mixture, padding to neither. The
  expert-level balance loss (eq. 12-14 there) is added to the LM loss in training.
- Each branch is added through a zero-initialised tanh gate (Mllama's `residual + gate.tanh() * h`, after
  Flamingo, arXiv:2204.14198), so a freshly built model computes exactly its Qwen2.5-VL base.

Everything else is transformers' Qwen2.5-VL: the classes below subclass it and override only what differs.
This file imports only torch and transformers (and its sibling config), as it is copied next to checkpoints.
No `from __future__ import annotations`: transformers reads the `config:` class annotations as classes.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLCausalLMOutputWithPast,
    Qwen2_5_VLDecoderLayer,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2_5_VLPreTrainedModel,
    Qwen2_5_VLRMSNorm,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    apply_multimodal_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.utils import can_return_tuple

from .configuration_multiway import MultiwayQwen2_5_VLConfig

# Token modalities; PAD tokens take neither feed-forward path and do not count in the balance loss.
TEXT, VISION, PAD = 0, 1, -1
MODALITIES = {TEXT: "text", VISION: "vision"}


@dataclass
class RoutingRecord:
    """Where one mixture sent its tokens in one forward pass (collected when `MultiwayRouting.records` is a list)."""

    layer_idx: int
    modality: str  # "text" | "vision"
    tokens: torch.Tensor  # (N,) flat indices into the (batch * seq) tokens
    experts: torch.Tensor  # (N, top_k) routed expert ids
    weights: torch.Tensor  # (N, top_k) router probabilities of those experts


@dataclass
class MultiwayRouting:
    """Per-forward routing context, handed to the Multiway layers as a keyword argument.

    `modality` (batch, seq) holds TEXT/VISION/PAD per token; every mixture appends its balance loss to
    `aux_losses`; pass `records=[]` to get the routing decisions back (tests, analysis).
    """

    modality: torch.Tensor | None = None
    aux_losses: list[torch.Tensor] = field(default_factory=list)
    records: list[RoutingRecord] | None = None


def token_modality(config: MultiwayQwen2_5_VLConfig, input_ids: torch.Tensor | None,
                   mm_token_type_ids: torch.Tensor | None, attention_mask) -> torch.Tensor:
    """(batch, seq) TEXT/VISION/PAD from the image/video token ids, never from the embeddings."""
    if input_ids is not None:
        vision = (input_ids == config.image_token_id) | (input_ids == config.video_token_id)
    elif mm_token_type_ids is not None:  # the processor's 0 text / 1 image / 2 video
        vision = mm_token_type_ids > 0
    else:
        raise ValueError(
            "Multiway routing needs `input_ids` (or `mm_token_type_ids`) to tell image/video tokens from text "
            "tokens; it got only `inputs_embeds`. Pass input_ids, or mm_token_type_ids from the processor."
        )
    modality = vision.long()
    # A 2D padding mask covers past + current tokens; generate() may hand over a prepared 4D mask instead.
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        modality = modality.masked_fill(attention_mask[:, -modality.shape[1]:] == 0, PAD)
    return modality


class MultiwayLatentAttention(nn.Module):
    """Multi-head Latent Attention (DeepSeek-V2) with M-RoPE on the decoupled rotary query/key.

    Weight names follow DeepSeek-V3's reference implementation (wq_a, wkv_a, ...), which also keeps them clear of
    the `q_proj`/`o_proj` names that LoRA targets select in the base layers.
    """

    def __init__(self, text_config: Qwen2_5_VLTextConfig, config: MultiwayQwen2_5_VLConfig, cache_idx: int):
        super().__init__()
        self.config = text_config  # the attention interface reads `_attn_implementation` from it
        self.layer_idx = cache_idx  # slot of this block's latent in the KV cache (after the decoder layers')
        self.num_heads = config.mla_num_heads
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.mla_rope_head_dim
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        self.mrope_section = text_config.rope_parameters["mrope_section"]
        self.scaling = self.qk_head_dim**-0.5
        self.attention_dropout = text_config.attention_dropout
        self.is_causal = True
        self.num_key_value_groups = 1  # keys/values are per head already (decompressed from the latent)
        hidden, eps = text_config.hidden_size, text_config.rms_norm_eps

        if config.q_lora_rank is None:
            self.wq = nn.Linear(hidden, self.num_heads * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(hidden, config.q_lora_rank, bias=False)
            self.q_norm = Qwen2_5_VLRMSNorm(config.q_lora_rank, eps=eps)
            self.wq_b = nn.Linear(config.q_lora_rank, self.num_heads * self.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(hidden, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = Qwen2_5_VLRMSNorm(self.kv_lora_rank, eps=eps)
        self.wkv_b = nn.Linear(self.kv_lora_rank, self.num_heads * (self.qk_nope_head_dim + self.v_head_dim),
                               bias=False)
        self.wo = nn.Linear(self.num_heads * self.v_head_dim, hidden, bias=False)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.wq(x) if hasattr(self, "wq") else self.wq_b(self.q_norm(self.wq_a(x)))

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None = None, past_key_values: Cache | None = None,
                position_ids: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        bsz, q_len, _ = hidden_states.shape
        q = self._queries(hidden_states).view(bsz, q_len, self.num_heads, self.qk_head_dim).transpose(1, 2)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)  # (B, H, T, nope|rope)

        c_kv, k_pe = self.wkv_a(hidden_states).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_norm(c_kv).unsqueeze(1)  # (B, 1, T, kv_lora_rank): the compressed KV
        k_pe = k_pe.unsqueeze(1)  # (B, 1, T, rope): one rotary key shared by all heads
        cos, sin = position_embeddings  # (3, B, T, rope): the t/h/w M-RoPE tables of this layer
        q_pe, k_pe = apply_multimodal_rotary_pos_emb(q_pe, k_pe, cos, sin, self.mrope_section)

        if past_key_values is not None:
            # The cache stores the latent and the rotary key (DeepSeek-V2's small KV cache), not per-head K/V.
            _ensure_cache_slot(past_key_values, self.layer_idx)
            c_kv, k_pe = past_key_values.update(c_kv, k_pe, self.layer_idx)
        kv_len = c_kv.shape[2]
        kv = self.wkv_b(c_kv.squeeze(1)).view(bsz, kv_len, self.num_heads, -1).transpose(1, 2)
        k_nope, value = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)  # (B, H, S, nope|v)
        key = torch.cat([k_nope, k_pe.expand(-1, self.num_heads, -1, -1)], dim=-1)  # (B, H, S, qk)
        query = torch.cat([q_nope, q_pe], dim=-1)  # (B, H, T, qk)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        flash = "flash" in (self.config._attn_implementation or "")
        if flash and self.v_head_dim != self.qk_head_dim:  # flash kernels need equal q/k/v head sizes
            value = F.pad(value, [0, self.qk_head_dim - self.v_head_dim])
        out, _ = attention(self, query, key, value, attention_mask, dropout=0.0 if not self.training else
                           self.attention_dropout, scaling=self.scaling, position_ids=position_ids, **kwargs)
        out = out[..., : self.v_head_dim]  # (B, T, H, v)
        return self.wo(out.reshape(bsz, q_len, -1))


def _ensure_cache_slot(cache: Cache, idx: int) -> None:
    """DynamicCache(config=...) holds one layer per decoder layer; the latents go in extra slots after them."""
    if not isinstance(cache, DynamicCache):
        raise NotImplementedError(
            f"Multiway latent attention caches its latent in a DynamicCache; got {type(cache).__name__}. "
            "Use the default cache (cache_implementation=None)."
        )
    while len(cache.layers) <= idx:
        cache.layers.append(DynamicLayer())


class SwiGLU(nn.Module):
    """The always-active shared experts, merged into one MLP (DeepSeekMoE); w1/w3/w2 = gate/up/down."""

    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.w1 = nn.Linear(hidden, intermediate, bias=False)
        self.w3 = nn.Linear(hidden, intermediate, bias=False)
        self.w2 = nn.Linear(intermediate, hidden, bias=False)
        self.act = ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class RoutedExperts(nn.Module):
    """Fine-grained experts as stacked weights: gate_up (E, D, 2I) and down (E, I, D)."""

    def __init__(self, n_experts: int, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.gate_up = nn.Parameter(torch.empty(n_experts, hidden, 2 * intermediate))
        self.down = nn.Parameter(torch.empty(n_experts, intermediate, hidden))
        self.act = ACT2FN[act]

    def forward(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        gate, up = (x @ self.gate_up[expert]).chunk(2, dim=-1)  # (N, I) each
        return (self.act(gate) * up) @ self.down[expert]  # (N, D)


class ModalityMoE(nn.Module):
    """One modality's DeepSeekMoE: softmax router, top-k routed experts, shared experts, balance loss."""

    def __init__(self, text_config: Qwen2_5_VLTextConfig, config: MultiwayQwen2_5_VLConfig):
        super().__init__()
        hidden, act = text_config.hidden_size, text_config.hidden_act
        self.n_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.router = nn.Linear(hidden, self.n_experts, bias=False)
        self.experts = RoutedExperts(self.n_experts, hidden, config.moe_intermediate_size, act)
        self.shared = (SwiGLU(hidden, config.n_shared_experts * config.moe_intermediate_size, act)
                       if config.n_shared_experts else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D) -> output (N, D), balance loss (), top-k expert ids (N, k), their weights (N, k)."""
        probs = self.router(x).float().softmax(dim=-1)  # (N, E)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        out = torch.zeros_like(x)
        counts = torch.bincount(experts.flatten(), minlength=self.n_experts)  # tokens per expert
        for expert in counts.nonzero().flatten().tolist():  # skip experts no token chose
            token, slot = (experts == expert).nonzero(as_tuple=True)
            routed = self.experts(x[token], expert) * weights[token, slot, None].to(x.dtype)
            out = out.index_add(0, token, routed)
        if self.shared is not None:
            out = out + self.shared(x)
        # DeepSeekMoE expert-level balance loss: sum_i f_i * P_i with f_i = E / (k N) * count_i (no gradient)
        # and P_i the mean router probability; 1.0 when perfectly balanced.
        frac = counts.float() * self.n_experts / (self.top_k * x.shape[0])
        aux = (frac * probs.mean(dim=0)).sum()
        return out, aux, experts, weights


class MultiwayBlock(nn.Module):
    """Gated shared latent attention, then gated modality-routed MoE; both gates start at zero (identity)."""

    def __init__(self, text_config: Qwen2_5_VLTextConfig, config: MultiwayQwen2_5_VLConfig, layer_idx: int,
                 cache_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        eps = text_config.rms_norm_eps
        self.attn_norm = Qwen2_5_VLRMSNorm(text_config.hidden_size, eps=eps)
        self.attn = MultiwayLatentAttention(text_config, config, cache_idx)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = Qwen2_5_VLRMSNorm(text_config.hidden_size, eps=eps)
        self.moe = nn.ModuleDict({name: ModalityMoE(text_config, config) for name in MODALITIES.values()})
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def forward(self, hidden_states: torch.Tensor, routing: MultiwayRouting, **attn_kwargs) -> torch.Tensor:
        attn = self.attn(self.attn_norm(hidden_states), **attn_kwargs)
        # The gates may be fp32 (LLaMA-Factory upcasts trainable parameters) while the stream is bf16.
        hidden_states = hidden_states + (self.attn_gate.tanh() * attn).to(hidden_states.dtype)

        x = self.ffn_norm(hidden_states).flatten(0, 1)  # (B*T, D)
        modality = routing.modality.flatten()  # (B*T,)
        out = torch.zeros_like(x)
        for code, name in MODALITIES.items():
            tokens = (modality == code).nonzero().flatten()
            if tokens.numel() == 0:
                continue
            y, aux, experts, weights = self.moe[name](x[tokens])
            out = out.index_copy(0, tokens, y)
            routing.aux_losses.append(aux)
            if routing.records is not None:
                routing.records.append(RoutingRecord(self.layer_idx, name, tokens, experts, weights))
        out = out.view_as(hidden_states)
        return hidden_states + (self.ffn_gate.tanh() * out).to(hidden_states.dtype)


class MultiwayQwen2_5_VLDecoderLayer(Qwen2_5_VLDecoderLayer):
    """Qwen2.5-VL's decoder layer followed by a Multiway block that sees the same positions and mask."""

    def __init__(self, text_config: Qwen2_5_VLTextConfig, layer_idx: int, config: MultiwayQwen2_5_VLConfig,
                 cache_idx: int):
        super().__init__(text_config, layer_idx)
        self.multiway = MultiwayBlock(text_config, config, layer_idx, cache_idx)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: Cache | None = None,
                use_cache: bool | None = False, position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                multiway_routing: MultiwayRouting | None = None, **kwargs) -> torch.Tensor:
        if multiway_routing is None or multiway_routing.modality is None:
            raise ValueError("A Multiway layer needs token modalities: call it through MultiwayQwen2_5_VLModel.")
        hidden_states = super().forward(
            hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache, position_embeddings=position_embeddings, **kwargs,
        )
        return self.multiway(
            hidden_states, multiway_routing, position_embeddings=position_embeddings, attention_mask=attention_mask,
            past_key_values=past_key_values, position_ids=position_ids, **kwargs,
        )


class MultiwayQwen2_5_VLPreTrainedModel(Qwen2_5_VLPreTrainedModel):
    config: MultiwayQwen2_5_VLConfig
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "MultiwayQwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MultiwayBlock):
            # Zero gates: the block adds nothing until training opens them, so step 0 equals the base model.
            init.zeros_(module.attn_gate)
            init.zeros_(module.ffn_gate)
        elif isinstance(module, RoutedExperts):
            std = self.config.get_text_config().initializer_range
            init.normal_(module.gate_up, mean=0.0, std=std)
            init.normal_(module.down, mean=0.0, std=std)


class MultiwayQwen2_5_VLTextModel(MultiwayQwen2_5_VLPreTrainedModel, Qwen2_5_VLTextModel):
    """Qwen2.5-VL's text model with the configured decoder layers replaced by Multiway layers."""

    config: Qwen2_5_VLTextConfig

    def __init__(self, config: Qwen2_5_VLTextConfig, multiway: MultiwayQwen2_5_VLConfig):
        super().__init__(config)
        n_layers = config.num_hidden_layers
        for slot, idx in enumerate(multiway.multiway_layers):
            self.layers[idx] = MultiwayQwen2_5_VLDecoderLayer(config, idx, multiway, cache_idx=n_layers + slot)
        self.post_init()  # initialises only the new layers (the others are flagged as initialised)


class MultiwayQwen2_5_VLModel(MultiwayQwen2_5_VLPreTrainedModel, Qwen2_5_VLModel):
    def __init__(self, config: MultiwayQwen2_5_VLConfig):
        # Qwen2_5_VLModel.__init__ hard-codes the plain text model: build the same two towers with ours.
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config)
        self.language_model = MultiwayQwen2_5_VLTextModel(config.text_config, config)
        self.rope_deltas = None
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.FloatTensor | None = None, mm_token_type_ids: torch.IntTensor | None = None,
                multiway_routing: MultiwayRouting | None = None, **kwargs):
        routing = multiway_routing if multiway_routing is not None else MultiwayRouting()
        routing.modality = token_modality(self.config, input_ids, mm_token_type_ids, attention_mask)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               mm_token_type_ids=mm_token_type_ids, multiway_routing=routing, **kwargs)


@dataclass
class MultiwayCausalLMOutputWithPast(Qwen2_5_VLCausalLMOutputWithPast):
    """Qwen2.5-VL's output plus `aux_loss`: the summed balance losses of all mixtures (unweighted)."""

    aux_loss: torch.FloatTensor | None = None


class MultiwayQwen2_5_VLForConditionalGeneration(MultiwayQwen2_5_VLPreTrainedModel,
                                                 Qwen2_5_VLForConditionalGeneration):
    def __init__(self, config: MultiwayQwen2_5_VLConfig):
        # Qwen2_5_VLForConditionalGeneration.__init__ hard-codes Qwen2_5_VLModel: same head, our model.
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = MultiwayQwen2_5_VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        rope_deltas: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        multiway_routing: MultiwayRouting | None = None,
        **kwargs,
    ) -> MultiwayCausalLMOutputWithPast:
        """Qwen2.5-VL's forward (explicit arguments: generate() validates its inputs against this signature);
        in training with labels the loss also holds `router_aux_loss_coef` x the summed balance losses."""
        routing = multiway_routing if multiway_routing is not None else MultiwayRouting()
        outputs = super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
            pixel_values=pixel_values, pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw, rope_deltas=rope_deltas, mm_token_type_ids=mm_token_type_ids,
            second_per_grid_ts=second_per_grid_ts, logits_to_keep=logits_to_keep, multiway_routing=routing,
            **kwargs,
        )
        aux = torch.stack(routing.aux_losses).sum() if routing.aux_losses else None
        loss = outputs.loss
        if loss is not None and aux is not None and self.training:
            if torch.is_grad_enabled() and not aux.requires_grad and self._routers_trainable():
                raise RuntimeError(
                    "The Multiway balance loss was computed without autograd: reentrant gradient checkpointing "
                    "runs the layers under no_grad, so the routers would never be balanced. Set "
                    "`use_reentrant_gc: false` in the LLaMA-Factory recipe and leave out "
                    "`gradient_checkpointing: true` "
                    "(the Trainer would re-enable it as reentrant); in plain transformers pass "
                    "gradient_checkpointing_kwargs={'use_reentrant': False}."
                )
            loss = loss + self.config.router_aux_loss_coef * aux.to(loss.dtype)
        return MultiwayCausalLMOutputWithPast(**{**outputs, "loss": loss}, aux_loss=aux)

    def _routers_trainable(self) -> bool:
        return any(p.requires_grad for n, p in self.named_parameters() if ".router." in n)


# Saved checkpoints carry auto_map + this file and its config file (loadable with trust_remote_code=True).
MultiwayQwen2_5_VLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "MultiwayQwen2_5_VLForConditionalGeneration",
    "MultiwayQwen2_5_VLModel",
    "MultiwayQwen2_5_VLPreTrainedModel",
    "MultiwayQwen2_5_VLTextModel",
    "MultiwayRouting",
]
