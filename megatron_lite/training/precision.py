"""fp16's dynamic loss scaling, with NeMo's keys: model.native_amp_init_scale,
model.native_amp_growth_interval and model.hysteresis.

Lightning makes its own GradScaler for precision=16-mixed, without hysteresis, and on a CPU
silently trains in bf16 instead. We hand it the precision plugin ourselves, so fp16 with loss
scaling is what runs, on a GPU or a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from megatron_lite.config import RunConfig


class HysteresisGradScaler(torch.amp.GradScaler):
    """A GradScaler whose scale halves only once `hysteresis` optimizer steps in a row have
    overflowed (every overflowing step is still skipped), as NeMo's does; it doubles after
    `growth_interval` clean steps in a row. hysteresis=1 is torch's own GradScaler."""

    def __init__(self, device: str, *, init_scale: float, growth_interval: int, hysteresis: int) -> None:
        super().__init__(device, init_scale=init_scale, growth_interval=growth_interval)
        self.hysteresis = hysteresis
        self._overflows_left = hysteresis  # overflowing steps still tolerated at this scale

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        if new_scale is not None or not self.is_enabled():
            return super().update(new_scale)
        overflowed = any(bool(found_inf.item()) for state in self._per_optimizer_states.values()
                         for found_inf in state["found_inf_per_device"].values())
        if not overflowed:
            self._overflows_left = self.hysteresis
            return super().update()
        self._overflows_left -= 1
        if self._overflows_left <= 0:
            return super().update()  # halves the scale
        # Tolerated: keep the scale, restart the count of clean steps towards growth (torch's
        # tracker, private but stable), and clear this step's records as update() does.
        self._growth_tracker.fill_(0)
        return super().update(new_scale=self.get_scale())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "overflows_left": self._overflows_left}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._overflows_left = state_dict["overflows_left"]


def device_type(cfg: RunConfig) -> str:
    """"cuda" or "cpu": where trainer.accelerator puts the model."""
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def fp16_plugin(cfg: RunConfig) -> MixedPrecision:
    model = cfg.model
    scaler = HysteresisGradScaler(
        device_type(cfg),
        init_scale=model.native_amp_init_scale,
        growth_interval=model.native_amp_growth_interval,
        hysteresis=model.hysteresis,
    )
    return MixedPrecision("16-mixed", device_type(cfg), scaler=scaler)
