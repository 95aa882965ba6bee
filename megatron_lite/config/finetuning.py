"""The roots of conf/megatron_gpt_sft_config.yaml and conf/megatron_t5_finetuning_config.yaml.

A fine-tuning config is its family's config (the same model keys, which must describe the
restored model) whose data section is the SFT one (config/sft.py), with model.peft
(config/peft.py), and whose weights start from restore_from_path: a checkpoint of ours or a
Hugging Face folder. NeMo keeps that path at model.restore_from_path; either place works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Union

from megatron_lite.config.gpt import GPTConfig
from megatron_lite.config.model import GPTModelConfig
from megatron_lite.config.nemo import fixed
from megatron_lite.config.parallel import check_context_parallel
from megatron_lite.config.peft import PeftConfig
from megatron_lite.config.run import RunConfig
from megatron_lite.config.sft import GPTSFTDataConfig, T5SFTDataConfig
from megatron_lite.config.t5 import T5Config, T5ModelConfig


@dataclass
class FineTuningModelKeys:
    """The model keys only a fine-tuning run has (NeMo's)."""

    # NeMo's place for the checkpoint the run starts from; the root's restore_from_path is the same.
    restore_from_path: Optional[str] = None
    save_nemo_on_validation_end: bool = fixed(False, ".nemo archives are not written; checkpoints "
                                                     "hold their config")
    peft: PeftConfig = field(default_factory=PeftConfig)

    def check_splits(self) -> None:
        for name, split in self.data.splits.items():
            split.check_batch_sizes(f"model.data.{name}.", self.global_batch_size, self.micro_batch_size)
        if self.peft.lora is not None and self.uses_dtensor:
            raise ValueError(
                "model.peft.peft_scheme=lora with model.fsdp=True, tensor or context parallel is "
                "not implemented: LoRA checkpoints hold the adapters alone, restored over "
                "restore_from_path's weights, which the sharded layouts do not do yet; fine-tune "
                "with data parallel (trainer.devices), or fine-tune every weight (peft_scheme=none)"
            )


def _check_learned_positions(stack: str, key: str, length: int, cfg: Union[GPTModelConfig, T5ModelConfig],
                             position_type: str) -> None:
    if position_type == "learned_absolute" and length > cfg.max_position_embeddings:
        raise ValueError(f"{key}={length} exceeds model.max_position_embeddings="
                         f"{cfg.max_position_embeddings}: the {stack}'s learned absolute positions "
                         "have no embedding beyond it")


@dataclass
class GPTSFTModelConfig(FineTuningModelKeys, GPTModelConfig):
    # True: the loss falls on the answer (and eos) only; False: on the context's tokens too.
    answer_only_loss: bool = True
    data: GPTSFTDataConfig = field(default_factory=GPTSFTDataConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_splits()
        for name, split in self.data.splits.items():
            _check_learned_positions("model", f"model.data.{name}.max_seq_length", split.max_seq_length,
                                     self, self.position_embedding_type)
        check_context_parallel(self.position_embedding_type, self.context_parallel_size,
                               {f"model.data.{name}.max_seq_length": split.max_seq_length
                                for name, split in self.data.splits.items()})


@dataclass
class T5SFTModelConfig(FineTuningModelKeys, T5ModelConfig):
    data: T5SFTDataConfig = field(default_factory=T5SFTDataConfig)

    def __post_init__(self) -> None:
        # Before T5ModelConfig's checks, which know the pretraining keys only.
        for name, split in self.data.splits.items():
            _check_learned_positions("encoder", f"model.data.{name}.max_seq_length", split.max_seq_length,
                                     self, self.encoder.position_embedding_type)
            _check_learned_positions("decoder", f"model.data.{name}.max_tgt_seq_length",
                                     split.target_length, self, self.decoder.position_embedding_type)
        super().__post_init__()
        self.check_splits()


def check_restore_from_path(cfg: Union["GPTSFTConfig", "T5SFTConfig"]) -> None:
    """One restore_from_path, set in either place, made absolute: a LoRA checkpoint finds its
    base model there again (for resuming, generation and export) from any directory."""
    root, model = cfg.restore_from_path, cfg.model.restore_from_path
    if root is not None and model is not None and os.path.abspath(root) != os.path.abspath(model):
        raise ValueError(f"restore_from_path={root} and model.restore_from_path={model} differ; set "
                         "one of them")
    path = root if root is not None else model
    if path is None:
        raise ValueError("restore_from_path is not set: fine-tuning starts from a checkpoint (.ckpt) "
                         "or a Hugging Face folder; set restore_from_path=<path> (or NeMo's "
                         "model.restore_from_path)")
    cfg.restore_from_path = cfg.model.restore_from_path = os.path.abspath(path)


@dataclass
class GPTSFTConfig(GPTConfig):
    name: str = "megatron_gpt_sft"
    model: GPTSFTModelConfig = field(default_factory=GPTSFTModelConfig)

    def __post_init__(self) -> None:
        check_restore_from_path(self)
        super().__post_init__()


@dataclass
class T5SFTConfig(T5Config):
    name: str = "megatron_t5_sft"
    model: T5SFTModelConfig = field(default_factory=T5SFTModelConfig)

    def __post_init__(self) -> None:
        check_restore_from_path(self)
        super().__post_init__()

    def startup_notes(self) -> list[str]:
        # T5Config's own note is about span corruption, which fine-tuning does not do.
        return RunConfig.startup_notes(self)
