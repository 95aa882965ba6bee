"""`train(cfg)`: everything `scripts/train.py` does once Hydra has produced a family's config."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from torch import nn

from megatron_lite.config import RunConfig
from megatron_lite.tokenizers import Tokenizer, build_tokenizer, pad_vocab_size
from megatron_lite.training.adapters import add_adapters, check_same_adapters, lora_settings
from megatron_lite.training.checkpointing import (
    check_structure,
    checkpoint_config,
    checkpoint_metadata,
    read_checkpoint,
    restore_checkpoint_weights,
)
from megatron_lite.training.data import MegatronDataModule
from megatron_lite.training.distributed_checkpoint import is_distributed_checkpoint
from megatron_lite.training.exp_manager import check_run_folder, prepare_run, save_config
from megatron_lite.training.families import family_of
from megatron_lite.training.module import VOCAB_KEY, MegatronLightningModule
from megatron_lite.training.trainer import build_trainer

logger = logging.getLogger(__name__)


def padded_vocab_size(cfg: RunConfig, tokenizer: Tokenizer, start: str | Path | None = None) -> int:
    """The embedding table's rows: model.override_vocab_size, or the tokenizer's vocabulary
    (sentinels included) rounded up to a multiple of model.make_vocab_size_divisible_by x
    model.tensor_model_parallel_size (Megatron's padding). A run starting from a checkpoint of
    ours (`start`: resumed, or restore_from_path) that was padded for another tensor-parallel
    size keeps that checkpoint's rows, which its own tensor-parallel size must divide: the
    layout alone does not change the model."""
    model = cfg.model
    if model.override_vocab_size is None:
        padded = pad_vocab_size(tokenizer.vocab_size, model.make_vocab_size_divisible_by,
                                model.tensor_model_parallel_size)
        return _padded_for_another_layout(cfg, tokenizer, start) or padded
    if model.override_vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model.override_vocab_size={model.override_vocab_size} is smaller than the "
            f"tokenizer's vocabulary of {tokenizer.vocab_size} tokens (model.tokenizer.library="
            f"{cfg.model.tokenizer.library}): "
            "token ids would index past the embedding table"
        )
    return model.override_vocab_size


def _padded_for_another_layout(cfg: RunConfig, tokenizer: Tokenizer, start: str | Path | None) -> int | None:
    """The starting checkpoint's padded vocabulary size when it differs from this run's only by
    the tensor-parallel size it was padded for (and this run's divides it); else None (the
    checkpoint's own checks speak later)."""
    path = None if start is None else Path(start)
    if path is None or not (path.is_file() or is_distributed_checkpoint(path)):
        return None  # none, or a Hugging Face folder (never padded for tensor parallel)
    try:
        checkpoint = checkpoint_metadata(path)
        saved = checkpoint_config(checkpoint).model
    except (ValueError, OSError):
        return None
    model, rows = cfg.model, checkpoint[VOCAB_KEY]
    same_padding = (saved.make_vocab_size_divisible_by, saved.override_vocab_size) == (
        model.make_vocab_size_divisible_by, model.override_vocab_size)
    saved_padded = pad_vocab_size(tokenizer.vocab_size, saved.make_vocab_size_divisible_by,
                                  saved.tensor_model_parallel_size)
    if not same_padding or rows != saved_padded or rows % model.tensor_model_parallel_size:
        return None
    return rows


def build_tokenizer_from_config(cfg: RunConfig) -> Tokenizer:
    tok = cfg.model.tokenizer
    return build_tokenizer(tok.library, tok.model, type=tok.type, vocab_file=tok.vocab_file,
                           merge_file=tok.merge_file, num_sentinel_tokens=tok.num_sentinel_tokens)


@rank_zero_only
def report_nemo_settings(cfg: RunConfig) -> None:
    """Once at start-up: the NeMo keys set but not read here, and the NeMo settings that run as
    their nearest equivalent."""
    ignored = cfg.ignored_keys()
    if ignored:
        logger.warning("NeMo keys accepted and ignored: %s", "; ".join(
            f"{reason}: {', '.join(keys)}" for reason, keys in ignored.items()))
    for note in cfg.startup_notes():
        logger.warning(note)


def checkpoint_bytes(cfg: RunConfig, model: nn.Module) -> int | None:
    """About the size of one checkpoint: the trained weights and AdamW's two moments (None: no
    checkpoints are written)."""
    if not cfg.exp_manager.create_checkpoint_callback:
        return None
    return 3 * sum(param.numel() * param.element_size() for param in model.parameters()
                   if param.requires_grad)


def load_starting_weights(model: nn.Module, cfg: RunConfig, resume_from: Path | None,
                          tokenizer: Tokenizer) -> None:
    """The weights the run starts from, and its adapters. A new run takes restore_from_path's
    weights (if set); a resumed run's come with its checkpoint, which Lightning loads later,
    except a LoRA run's frozen ones: its checkpoints hold the adapters only, and the base
    comes from restore_from_path again (training/adapters.py)."""
    lora = lora_settings(cfg)
    if resume_from is not None:
        checkpoint, source = checkpoint_metadata(resume_from), f"resuming from {resume_from}"
        check_same_adapters(cfg, checkpoint_config(checkpoint), source)
        if lora is not None:
            restore_from_path(model, cfg, tokenizer)
            add_adapters(model, lora)
        check_structure(model, checkpoint, source)
        return
    if cfg.restore_from_path is not None:
        restore_from_path(model, cfg, tokenizer)
    if lora is not None:
        add_adapters(model, lora)


def restore_from_path(model: nn.Module, cfg: RunConfig, tokenizer: Tokenizer) -> None:
    source = f"restore_from_path={cfg.restore_from_path}"
    checkpoint = read_checkpoint(cfg.restore_from_path)
    restore_checkpoint_weights(model, checkpoint, source)
    check_same_vocabulary(tokenizer, checkpoint, source)


def check_same_vocabulary(tokenizer: Tokenizer, checkpoint: dict, source: str) -> None:
    """The run's tokenizer must be the restored model's: the same token for every id (a
    tokenizer of another vocabulary but the same size would go unnoticed by the weights'
    shapes). A checkpoint whose tokenizer cannot be read is not compared (a warning says so)."""
    try:
        saved = build_tokenizer_from_config(checkpoint_config(checkpoint))
    except (ValueError, FileNotFoundError, ImportError) as error:
        logger.warning("%s: the restored model's tokenizer was not compared with model.tokenizer.* "
                       "(%s)", source, error)
        return
    if saved.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{source}: model.tokenizer.* has {tokenizer.vocab_size} tokens, the "
                         f"restored model's tokenizer {saved.vocab_size}: name the tokenizer the model "
                         "was trained with")
    ids = range(tokenizer.vocab_size)
    for token_id, (ours, theirs) in enumerate(zip(tokenizer.ids_to_tokens(ids), saved.ids_to_tokens(ids))):
        if ours != theirs:
            raise ValueError(f"{source}: model.tokenizer.* is not the restored model's tokenizer: token "
                             f"{token_id} is {ours!r} here, {theirs!r} there; name the tokenizer the "
                             "model was trained with")


def train(cfg: RunConfig, callbacks: Sequence[pl.Callback] = ()) -> MegatronLightningModule:
    """Train (or resume, or fine-tune) the config's model family as it says; returns the
    trained module.

    Every check that can fail on the user's input runs before the Trainer starts and before
    anything is written into the run folder.
    """
    pl.seed_everything(cfg.model.seed, verbose=False)
    family = family_of(cfg)
    run = prepare_run(cfg)
    report_nemo_settings(cfg)
    tokenizer = build_tokenizer_from_config(cfg)
    vocab_size = padded_vocab_size(cfg, tokenizer, run.resume_from or cfg.restore_from_path)
    train_dataset, valid_dataset = family.build_datasets(cfg, tokenizer)
    # One sample of each split read here: data made with another tokenizer fails now, not in a
    # loader worker after the Trainer has started.
    for dataset in (train_dataset, valid_dataset):
        dataset[0]  # noqa: B018 - read for the dataset's own checks
    module = MegatronLightningModule(cfg, vocab_size)
    batch = cfg.model.global_batch_size
    # The model's FLOPs, before any adapters (whose few FLOPs are not counted) are added.
    flops_per_step = batch * family.flops_per_sample(module.model, cfg)
    load_starting_weights(module.model, cfg, run.resume_from, tokenizer)
    check_run_folder(run, checkpoint_bytes(cfg, module.model))
    trainer = build_trainer(
        cfg, run,
        tokens_per_step=batch * family.tokens_per_sample(cfg),
        flops_per_step=flops_per_step,
        callbacks=callbacks,
    )
    if trainer.is_global_zero:
        save_config(cfg, run)
        logger.info("run folder: %s", run.log_dir)
    trainer.fit(
        module,
        datamodule=MegatronDataModule(cfg, train_dataset, valid_dataset),
        ckpt_path=None if run.resume_from is None else str(run.resume_from),
    )
    if cfg.inference.tokens_to_generate > 0:
        model = whole_model(module, vocab_size)  # every rank takes part in gathering the weights
        if trainer.is_global_zero:
            print_sample(cfg, model.to(trainer.strategy.root_device), tokenizer)
    return module


def whole_model(module: MegatronLightningModule, vocab_size: int) -> nn.Module | None:
    """The trained model with all its weights on this process. A sharded or tensor-parallel
    model's weights are gathered into a new model of the same config on rank 0 (None elsewhere),
    so that generation with its key/value cache runs there alone, as for one process."""
    if not module.parallelized:
        return module.model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: PLC0415

    state = get_model_state_dict(module.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not state:  # not rank 0
        return None
    model = module.family.model_type(module.cfg.model, vocab_size)
    model.load_state_dict(state)
    return model.eval()


def print_sample(cfg: RunConfig, model: nn.Module, tokenizer: Tokenizer) -> None:
    """The sample of inference.*; one that cannot be made (a prompt and length the model cannot
    take) is a warning, since the run it follows has succeeded."""
    try:
        text = family_of(cfg).generate(model, tokenizer, cfg.inference, cfg.model.seed)
    except ValueError as error:
        logger.warning("no sample printed (inference.*): %s", error)
        return
    print(f"\n--- sample (prompt {cfg.inference.prompt!r}) ---\n{text}\n---", flush=True)
