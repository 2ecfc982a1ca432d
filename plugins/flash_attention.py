"""Fix: transformers 5.6.0's flash-attention wrapper crashes on every model without attention sinks.

transformers 5.6.0 added an `s_aux` (attention sink) parameter to
`transformers.integrations.flash_attention.flash_attention_forward`, default None, and passes it on to the kernel
as `s_aux=s_aux.to(query.dtype)` unconditionally (upstream issue huggingface/transformers#45588). Only models
with learned sinks (gpt-oss) pass a tensor; Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni, SigLIP and Qwen2.5 never do.
So every recipe that sets `flash_attn: fa2` dies with `AttributeError: 'NoneType' object has no attribute 'to'`
at the first attention call of its first forward, on any machine where flash-attn is installed (LLaMA-Factory
issue hiyouga/LlamaFactory#10610 is the same crash from `llamafactory-cli train`).

transformers 5.6.1 is 5.6.0 plus exactly this fix (PR huggingface/transformers#45589: the two wheels differ
in `integrations/flash_attention.py` and the version string only), but LLaMA-Factory 0.9.5 requires
`transformers<=5.6.0`. We apply the same fix to 5.6.0: the kernel receives `s_aux=None` for a sink-less model,
and a sink tensor is still converted to the query's dtype. Other transformers versions are left alone (5.5
has no `s_aux` parameter; 5.6.1 and later carry the fix).
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys

BROKEN_RELEASE = "5.6.0"


class _NoAttentionSink:
    """Stands in for `s_aux=None` inside transformers' wrapper: its `.to(dtype)` gives the kernel None back."""

    def to(self, *args, **kwargs) -> None:
        return None


NO_ATTENTION_SINK = _NoAttentionSink()


def patch_flash_attention_forward(flash_attention) -> None:
    """Replace `flash_attention_forward` of `transformers.integrations.flash_attention` where it is held.

    The autoload hook runs this right after the module is executed, before `transformers.modeling_utils`
    (the `ALL_ATTENTION_FUNCTIONS` dispatch table the modeling files look the function up in) and
    `integrations.hub_kernels` bind the name; when they were imported first, their references are rebound too.
    """
    if importlib.metadata.version("transformers") != BROKEN_RELEASE:
        return
    upstream = flash_attention.flash_attention_forward

    # Every caller in transformers passes `s_aux` by keyword (gpt-oss: `s_aux=self.sinks`), or not at all.
    @functools.wraps(upstream)
    def flash_attention_forward(*args, s_aux=None, **kwargs):
        return upstream(*args, s_aux=NO_ATTENTION_SINK if s_aux is None else s_aux, **kwargs)

    flash_attention.flash_attention_forward = flash_attention_forward
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    attention_interface = getattr(modeling_utils, "AttentionInterface", None)  # None while it is still importing
    if attention_interface is not None:
        mapping = attention_interface._global_mapping
        mapping.update({name: flash_attention_forward for name, function in mapping.items() if function is upstream})
    hub_kernels = sys.modules.get("transformers.integrations.hub_kernels")
    if getattr(hub_kernels, "flash_attention_forward", None) is upstream:
        hub_kernels.flash_attention_forward = flash_attention_forward
