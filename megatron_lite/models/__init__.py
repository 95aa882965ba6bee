"""Model families built from the typed config."""

from megatron_lite.models.gpt import GPTModel

__all__ = ["GPTModel"]
