"""Model families built from the typed config."""

from megatron_lite.models.gpt import GPTModel
from megatron_lite.models.t5 import T5Model, T5Stack

__all__ = ["GPTModel", "T5Model", "T5Stack"]
