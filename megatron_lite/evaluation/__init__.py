"""Evaluation of trained checkpoints: perplexity at multiples of the training length."""

from megatron_lite.evaluation.length_extrapolation import (
    ExtrapolationResult,
    HeldOutText,
    LengthResult,
    evaluate_checkpoint,
    load_gpt_for_evaluation,
    read_held_out_text,
)

__all__ = [
    "ExtrapolationResult",
    "HeldOutText",
    "LengthResult",
    "evaluate_checkpoint",
    "load_gpt_for_evaluation",
    "read_held_out_text",
]
