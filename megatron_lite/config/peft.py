"""`model.peft.*`: parameter-efficient fine-tuning (NeMo's keys). `peft_scheme: lora` trains
low-rank adapters on a frozen model; `none` fine-tunes every weight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from megatron_lite.config.checks import require_at_least
from megatron_lite.config.nemo import INERT, fixed, ignored

PEFT_SCHEMES = ("none", "lora")
# NeMo 1.23's other schemes, refused by name.
NEMO_ONLY_SCHEMES = ("adapter", "ia3", "ptuning", "selective", "sdlora")
# NeMo's names of the layers an adapter may sit on (modules/lora.py maps them to ours).
LORA_TARGET_MODULES = ("attention_qkv", "attention_dense", "mlp_fc1", "mlp_fc2")
# NeMo's initialisations of the adapter's two matrices: A (column) and B (row).
LORA_INIT_METHODS = ("xavier", "normal", "zero")


@dataclass
class LoraTuningConfig:
    adapter_dim: int = 32  # the rank
    adapter_dropout: float = 0.0  # on the adapter's input
    # The update is scaled by alpha / adapter_dim. NeMo 1.23 has no alpha and scales by 1:
    # null keeps that (alpha = adapter_dim).
    alpha: Optional[float] = None
    target_modules: List[str] = field(default_factory=lambda: ["attention_qkv"])
    # Layers (from 1, per stack) that get adapters; null: all.
    layer_selection: Optional[List[int]] = None
    column_init_method: str = "xavier"  # A; xavier | normal | zero
    row_init_method: str = "zero"  # B; zero keeps the model unchanged until the adapters train
    weight_tying: bool = fixed(False, "every layer has adapters of its own")
    position_embedding_strategy: Optional[str] = ignored(INERT)  # weight tying only

    def check(self, prefix: str) -> None:
        require_at_least(self, prefix, 1, "adapter_dim")
        if not 0.0 <= self.adapter_dropout < 1.0:
            raise ValueError(f"{prefix}adapter_dropout must be in [0, 1), got {self.adapter_dropout}")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"{prefix}alpha must be > 0 (null: adapter_dim), got {self.alpha}")
        unknown = [name for name in self.target_modules if name not in LORA_TARGET_MODULES]
        if unknown or not self.target_modules:
            raise ValueError(f"{prefix}target_modules={list(self.target_modules)}: name one or more "
                             f"of {LORA_TARGET_MODULES}")
        if self.layer_selection is not None:
            if not self.layer_selection:
                raise ValueError(f"{prefix}layer_selection is empty; null selects every layer")
            low = min(self.layer_selection)
            if low < 1:
                raise ValueError(f"{prefix}layer_selection counts layers from 1, got {low}")
        for key in ("column_init_method", "row_init_method"):
            if getattr(self, key) not in LORA_INIT_METHODS:
                raise ValueError(f"{prefix}{key}={getattr(self, key)!r} is not one of {LORA_INIT_METHODS}")
        if self.column_init_method == self.row_init_method == "zero":
            raise ValueError(f"{prefix}column_init_method and row_init_method are both 'zero': "
                             "each matrix's gradient is a product with the other, so neither would train")

    @property
    def scale_alpha(self) -> float:
        return float(self.adapter_dim) if self.alpha is None else self.alpha


@dataclass
class PeftConfig:
    peft_scheme: str = "none"
    restore_from_path: Optional[str] = fixed(
        None, "adapters start new; to go on from trained ones, give their checkpoint as "
              "restore_from_path, which restores its adapters merged into the weights")
    lora_tuning: LoraTuningConfig = field(default_factory=LoraTuningConfig)
    # NeMo's sections of the schemes refused above.
    adapter_tuning: Optional[Dict[str, Any]] = ignored(INERT)
    p_tuning: Optional[Dict[str, Any]] = ignored(INERT)
    ia3_tuning: Optional[Dict[str, Any]] = ignored(INERT)
    selective_tuning: Optional[Dict[str, Any]] = ignored(INERT)

    def __post_init__(self) -> None:
        if self.peft_scheme in NEMO_ONLY_SCHEMES:
            raise ValueError(f"model.peft.peft_scheme={self.peft_scheme!r} is not implemented: use "
                             "lora, or none to fine-tune every weight")
        if self.peft_scheme not in PEFT_SCHEMES:
            raise ValueError(f"model.peft.peft_scheme={self.peft_scheme!r} is not one of {PEFT_SCHEMES}")
        if self.peft_scheme == "lora":
            self.lora_tuning.check("model.peft.lora_tuning.")

    @property
    def lora(self) -> Optional[LoraTuningConfig]:
        """The adapters to add, or None (full fine-tuning)."""
        return self.lora_tuning if self.peft_scheme == "lora" else None
