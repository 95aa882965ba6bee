"""The OmegaConf resolvers NeMo registers, so that a NeMo YAML's interpolations resolve here too:
`${multiply:${model.tensor_model_parallel_size}, ${model.pipeline_model_parallel_size}}`,
`${sum:${.num_layers},-1}`, `${gpu_name:}`."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def _multiply(x: Any, y: Any) -> Any:
    return x * y


def _sum(x: Any, y: Any) -> Any:
    return x + y


def _gpu_name() -> str | None:
    """The first GPU's generation as NeMo names it (a100, h100), or None."""
    import torch  # noqa: PLC0415 - only when a config asks

    if not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(0)
    return {8: "a100", 9: "h100"}.get(major)


NEMO_RESOLVERS = {"multiply": _multiply, "sum": _sum, "gpu_name": _gpu_name}


def register_nemo_resolvers() -> None:
    """Register NeMo's resolvers once per process (a second call, or NeMo's own, is kept)."""
    for name, resolver in NEMO_RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
