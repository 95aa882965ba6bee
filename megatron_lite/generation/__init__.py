"""Text generation with trained GPT models."""

from megatron_lite.generation.sampling import generate_ids, generate_text

__all__ = ["generate_ids", "generate_text"]
