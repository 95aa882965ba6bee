"""megatron_lite: a compact Megatron-style framework to train GPT and T5 language models."""

__version__ = "0.1.0"
