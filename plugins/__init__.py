"""Everything vlm-recipes adds to LLaMA-Factory and transformers (see `registry`)."""
