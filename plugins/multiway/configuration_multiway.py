"""Configuration of Multiway Qwen2.5-VL: Qwen2.5-VL (arXiv:2502.13923) with Multiway blocks in chosen layers.

A Multiway block (VLMo, arXiv:2111.02358; MoME, arXiv:2407.12709) lets all tokens share one attention while the
feed-forward path is modality-specific. The shared attention is DeepSeek-V2's Multi-head Latent Attention
(arXiv:2405.04434, section 2.1: low-rank joint KV compression plus a decoupled rotary key); the feed-forward paths
are DeepSeekMoE mixtures (arXiv:2401.06066: shared experts plus top-k routed fine-grained experts, expert-level
balance loss), one for text tokens and one for image/video tokens.

This file imports only transformers: it is copied next to saved checkpoints (`auto_map`) so they load with
`trust_remote_code=True` where vlm-recipes is not installed.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLConfig


class MultiwayQwen2_5_VLConfig(Qwen2_5_VLConfig):
    r"""Qwen2.5-VL's configuration plus the Multiway block's fields.

    Attributes (besides Qwen2_5_VLConfig's):
        multiway_layers: decoder layer indices that get a Multiway block after the layer (default: every 8th
            layer from layer 1, i.e. 1, 9, 17, 25, 33 for the 36-layer 3B).
        mla_num_heads: attention heads of the latent attention (default: the text model's heads).
        q_lora_rank: rank of the query compression; None projects queries at full rank (DeepSeek-V2-Lite).
        kv_lora_rank: rank of the joint key/value latent (what the KV cache stores per token).
        qk_nope_head_dim: per-head query/key width without rotary embedding.
        v_head_dim: per-head value width.
        n_shared_experts: always-active experts per modality (merged into one MLP of n x moe_intermediate_size).
        n_routed_experts: routed experts per modality.
        num_experts_per_tok: experts each token is routed to (top-k).
        moe_intermediate_size: hidden width of one (fine-grained) expert.
        router_aux_loss_coef: weight of the load-balancing loss added to the LM loss in training.

    Derived (properties, never stale): `mla_rope_head_dim` equals the text model's attention head_dim, so the
    latent attention's rotary part uses the very M-RoPE cos/sin of the layer it sits in.
    """

    model_type = "multiway_qwen2_5_vl"

    multiway_layers: list[int] | None = None
    # mla
    mla_num_heads: int | None = None
    q_lora_rank: int | None = 512
    kv_lora_rank: int = 256
    qk_nope_head_dim: int = 64
    v_head_dim: int = 64
    # moe
    n_shared_experts: int = 1
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 512
    router_aux_loss_coef: float = 1e-3

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        text = self.text_config
        if self.multiway_layers is None:
            self.multiway_layers = list(range(1, text.num_hidden_layers, 8))
        self.multiway_layers = sorted(int(i) for i in self.multiway_layers)
        if self.mla_num_heads is None:
            self.mla_num_heads = text.num_attention_heads
        self._validate_multiway()

    @property
    def mla_rope_head_dim(self) -> int:
        text = self.text_config
        return text.hidden_size // text.num_attention_heads

    def _validate_multiway(self) -> None:
        n_layers = self.text_config.num_hidden_layers
        layers = self.multiway_layers
        if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n_layers for i in layers):
            raise ValueError(
                f"multiway_layers must be distinct decoder layer indices in [0, {n_layers}), got {layers}"
            )
        positive = {"mla_num_heads": self.mla_num_heads, "kv_lora_rank": self.kv_lora_rank,
                    "qk_nope_head_dim": self.qk_nope_head_dim, "v_head_dim": self.v_head_dim,
                    "n_routed_experts": self.n_routed_experts, "num_experts_per_tok": self.num_experts_per_tok,
                    "moe_intermediate_size": self.moe_intermediate_size}
        if self.q_lora_rank is not None:
            positive["q_lora_rank"] = self.q_lora_rank
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.n_shared_experts < 0:
            raise ValueError(f"n_shared_experts must be >= 0, got {self.n_shared_experts}")
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must not exceed n_routed_experts "
                f"({self.n_routed_experts})"
            )
        if self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")


# Saved configs carry auto_map + this file (loadable with trust_remote_code=True). With the plugin installed,
# AutoConfig finds the class through the plugin (the record in __init__.py) instead.
MultiwayQwen2_5_VLConfig.register_for_auto_class()

__all__ = ["MultiwayQwen2_5_VLConfig"]
