"""Whole conversions between Hugging Face model folders and our checkpoints.

- `checkpoint_from_hf(folder)`: a folder (config.json, safetensors or pytorch_model.bin, the
  tokenizer's files) as the checkpoint dict read_checkpoint returns, in memory: the weights, the
  config they imply (model.* and model.tokenizer.*), the family and the vocabulary size.
  `restore_from_path`, scripts/generate.py and scripts/eval.py take such a folder directly.
- `convert_hf_to_checkpoint(folder, output)`: the same written as a .ckpt, with the tokenizer's
  files copied beside it (`<stem>_tokenizer/`), so that it does not depend on the folder.
- `export_checkpoint_to_hf(checkpoint, output)`: a folder transformers' from_pretrained loads
  (config.json, model.safetensors, tokenizer files); whatever the HF class cannot express is
  refused, naming our key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from megatron_lite.config import GPTDataConfig, RunConfig, T5DataConfig, config_to_dict
from megatron_lite.interop.architecture import HFArchitecture, State
from megatron_lite.interop.files import (
    CONFIG_FILE,
    SAFETENSORS_FILE,
    new_folder,
    read_hf_config,
    read_hf_state_dict,
    write_json,
    write_safetensors,
)
from megatron_lite.interop.gpt2 import GPT2
from megatron_lite.interop.llama import LLAMA
from megatron_lite.interop.t5 import T5
from megatron_lite.interop.tokenizer import (
    copy_tokenizer_files,
    has_tokenizer,
    imported_tokenizer,
    write_hf_tokenizer,
)
from megatron_lite.tokenizers import Tokenizer
from megatron_lite.training.checkpointing import (
    MODEL_PREFIX,
    checkpoint_config,
    checkpoint_family,
    checkpoint_weights,
    read_checkpoint,
)
from megatron_lite.training.families import family_named
from megatron_lite.training.module import CONFIG_KEY, CONSUMED_KEY, FAMILY_KEY, VOCAB_KEY
from megatron_lite.training.run import build_tokenizer_from_config
from megatron_lite.training.weight_layout import GROUPED, LAYOUT_KEY

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, HFArchitecture] = {arch.model_type: arch for arch in (GPT2, LLAMA, T5)}
# model.data.data_prefix of a converted model: the schema requires one, and no data came with it.
NO_DATA = "none (converted from a Hugging Face model)"
DATA_CONFIGS = {"gpt": GPTDataConfig, "t5": T5DataConfig}
EXPORT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def architecture_named(model_type: str) -> HFArchitecture:
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{model_type!r} is not an architecture we convert; these are: "
                         f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def _folder_architecture(config: dict[str, Any], source: str, requested: str | None) -> HFArchitecture:
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{source}: config.json's model_type={model_type!r} is not an architecture "
                         f"we convert; these are: {sorted(ARCHITECTURES)}")
    if requested is not None and requested != model_type:
        raise ValueError(f"{source} holds a {model_type!r} model (config.json's model_type), not "
                         f"the {requested!r} asked for")
    return ARCHITECTURES[model_type]


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int, source: str) -> None:
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"{source}: the tokenizer has {tokenizer.vocab_size} tokens (sentinels included), more "
            f"than the embedding's {vocab_size} rows: token ids would index past the table; the "
            "tokenizer does not belong to this model"
        )


@dataclasses.dataclass
class _Imported:
    arch: HFArchitecture
    model_cfg: Any  # GPTModelConfig or T5ModelConfig, without a tokenizer yet
    state: State
    vocab_size: int


def _import(folder: Path, family: str | None) -> _Imported:
    source = str(folder)
    config = read_hf_config(folder)
    arch = _folder_architecture(config, source, family)
    model_cfg, state = arch.import_model(config, read_hf_state_dict(folder), source)
    return _Imported(arch, model_cfg, state, model_cfg.override_vocab_size)


def _run_config(imported: _Imported, tokenizer_folder: Path) -> RunConfig:
    """The config the folder implies, with its tokenizer (checked against the embedding) when
    it has one; a folder without one is still a model (restore_from_path needs no tokenizer)."""
    family = imported.arch.family
    tokenizer, why_none = imported_tokenizer(tokenizer_folder, family=family)
    updates: dict[str, Any] = {"data": DATA_CONFIGS[family](data_prefix=NO_DATA)}
    if tokenizer is None:
        logger.warning("%s; the converted model has no tokenizer (set model.tokenizer.* to use "
                       "one)", why_none)
    else:
        updates["tokenizer"] = tokenizer
    cfg = family_named(family).config_type(model=dataclasses.replace(imported.model_cfg, **updates))
    if tokenizer is not None:
        check_tokenizer_fits(build_tokenizer_from_config(cfg), imported.vocab_size, str(tokenizer_folder))
    return cfg


def _checkpoint(imported: _Imported, cfg: RunConfig, folder: Path) -> dict[str, Any]:
    """What read_checkpoint returns for a checkpoint of ours (the keys load_model and
    restore_weights read), at step 0."""
    return {
        CONFIG_KEY: config_to_dict(cfg),
        FAMILY_KEY: imported.arch.family,
        VOCAB_KEY: imported.vocab_size,
        "state_dict": {MODEL_PREFIX + key: tensor for key, tensor in imported.state.items()},
        LAYOUT_KEY: GROUPED,
        "global_step": 0,
        CONSUMED_KEY: 0,
        "converted_from": str(folder),
    }


def checkpoint_from_hf(folder: str | Path, *, family: str | None = None) -> dict[str, Any]:
    """A Hugging Face folder as our checkpoint dict, converted in memory (tokenizer read from
    the folder). `family`, if given, is the architecture the folder must hold."""
    folder = Path(folder)
    imported = _import(folder, family)
    return _checkpoint(imported, _run_config(imported, folder), folder)


def convert_hf_to_checkpoint(folder: str | Path, output: str | Path, *,
                             family: str | None = None) -> Path | None:
    """Write a Hugging Face folder as our .ckpt `output`, its tokenizer files copied into
    `<output stem>_tokenizer/` beside it; returns that folder (None: the folder had no tokenizer)."""
    folder, output = Path(folder), Path(output)
    if output.exists():
        raise ValueError(f"{output} already exists; choose another output")
    imported = _import(folder, family)
    cfg = _run_config(imported, folder)  # every check, before anything is written
    tokenizer_folder = None
    if has_tokenizer(cfg.model.tokenizer):
        tokenizer_folder = output.with_name(output.stem + "_tokenizer")
        with new_folder(tokenizer_folder) as temporary:
            copy_tokenizer_files(folder, temporary)
        cfg = _run_config(imported, tokenizer_folder)  # the same tokenizer, read from its copy
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")  # renamed when whole: no half-written .ckpt
    try:
        torch.save(_checkpoint(imported, cfg, folder), temporary)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        if tokenizer_folder is not None:
            shutil.rmtree(tokenizer_folder, ignore_errors=True)
        raise
    return tokenizer_folder


def _export_architecture(cfg: RunConfig, family: str, requested: str | None) -> HFArchitecture:
    if requested is not None:
        arch = architecture_named(requested)
        if arch.family != family:
            raise ValueError(f"a {arch.hf_class} is a {arch.family} model; the checkpoint holds a "
                             f"{family} model")
        return arch
    if family == "t5":
        return T5
    return LLAMA if cfg.model.position_embedding_type == "rope" else GPT2


def _token_ids(arch: HFArchitecture, tokenizer: Tokenizer) -> dict[str, int]:
    """config.json's special token ids (T5's decoder starts with pad, as ours does)."""
    ids = {"eos_token_id": tokenizer.eod_id, "bos_token_id": tokenizer.bos_id,
           "pad_token_id": tokenizer.pad_id}
    if arch.family == "t5":
        ids["decoder_start_token_id"] = tokenizer.pad_id
    return {key: value for key, value in ids.items() if value is not None}


def export_checkpoint_to_hf(checkpoint_path: str | Path, output: str | Path, *,
                            family: str | None = None, dtype: str = "float32") -> list[str]:
    """Write our checkpoint as a Hugging Face folder `output` (which must not exist or be
    empty); `family` picks the HF architecture (gpt2, llama, t5; default: T5 for T5, Llama for
    rope, else GPT-2). Returns notes on what was left out (a tokenizer without HF files)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(EXPORT_DTYPES)}")
    checkpoint = read_checkpoint(checkpoint_path)
    cfg = checkpoint_config(checkpoint)
    arch = _export_architecture(cfg, checkpoint_family(checkpoint).model_name, family)
    vocab_size = checkpoint[VOCAB_KEY]
    # A LoRA checkpoint's adapters merged into its base's weights.
    config, hf_state = arch.export_model(cfg.model, vocab_size, checkpoint_weights(checkpoint))
    config.update(architectures=[arch.hf_class], model_type=arch.model_type, torch_dtype=dtype)
    tokenizer = None
    if has_tokenizer(cfg.model.tokenizer):
        tokenizer = build_tokenizer_from_config(cfg)
        check_tokenizer_fits(tokenizer, vocab_size, f"{checkpoint_path} (model.tokenizer.*)")
        config.update(_token_ids(arch, tokenizer))
    with new_folder(Path(output)) as folder:
        write_json(folder / CONFIG_FILE, config)
        write_safetensors(hf_state, folder / SAFETENSORS_FILE, EXPORT_DTYPES[dtype])
        if tokenizer is None:
            return ["the checkpoint names no tokenizer (it was converted from a folder without "
                    "one): the folder holds the model only"]
        return write_hf_tokenizer(cfg.model.tokenizer, tokenizer, folder)
