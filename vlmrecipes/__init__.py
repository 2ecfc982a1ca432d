"""vlm-recipes: a LLaMA-Factory plugin and recipe collection for fine-tuning vision-language models.

Kept import-free: the autoload hook imports this package in every interpreter of the environment.
"""

__version__ = "0.1.0"
