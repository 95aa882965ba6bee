"""`train(cfg)`: everything `scripts/train.py` does once Hydra has produced a GPTConfig."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytorch_lightning as pl
from torch.utils.data import Dataset

from megatron_lite.config import GPTConfig
from megatron_lite.data import build_gpt_datasets
from megatron_lite.generation import generate_text
from megatron_lite.models import GPTModel
from megatron_lite.tokenizers import Tokenizer, build_tokenizer, pad_vocab_size
from megatron_lite.training.callbacks import matmul_flops_per_token
from megatron_lite.training.checkpointing import check_structure, read_checkpoint, restore_weights
from megatron_lite.training.data import GPTDataModule
from megatron_lite.training.exp_manager import prepare_run, save_config
from megatron_lite.training.module import GPTLightningModule
from megatron_lite.training.trainer import build_trainer

logger = logging.getLogger(__name__)


def padded_vocab_size(cfg: GPTConfig, tokenizer: Tokenizer) -> int:
    """The embedding table's rows: model.override_vocab_size, or the tokenizer's vocabulary
    rounded up to a multiple of model.make_vocab_size_divisible_by."""
    model = cfg.model
    if model.override_vocab_size is None:
        return pad_vocab_size(tokenizer.vocab_size, model.make_vocab_size_divisible_by,
                              model.tensor_model_parallel_size)
    if model.override_vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model.override_vocab_size={model.override_vocab_size} is smaller than the "
            f"tokenizer's vocabulary of {tokenizer.vocab_size} tokens ({cfg.model.tokenizer.model}): "
            "token ids would index past the embedding table"
        )
    return model.override_vocab_size


def build_tokenizer_from_config(cfg: GPTConfig) -> Tokenizer:
    tok = cfg.model.tokenizer
    return build_tokenizer(tok.library, tok.model, type=tok.type, vocab_file=tok.vocab_file,
                           merge_file=tok.merge_file)


def build_datasets(cfg: GPTConfig, tokenizer: Tokenizer) -> tuple[Dataset, Dataset]:
    """(train, valid) sized for the whole run: max_steps global batches of training, and the
    limit_val_batches global batches every validation reads again."""
    model, data = cfg.model, cfg.model.data
    train, valid, _ = build_gpt_datasets(
        data.data_prefix,
        data.splits_string,
        model.encoder_seq_length,
        model.seed,
        num_samples=(
            cfg.trainer.max_steps * model.global_batch_size,
            cfg.trainer.limit_val_batches * model.global_batch_size,
            0,
        ),
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        eod_id=tokenizer.eod_id,
        cache_dir=data.index_mapping_dir,
    )
    for name, dataset in (("train", train), ("validation", valid)):
        if dataset is None:
            raise ValueError(
                f"model.data.splits_string={data.splits_string!r} leaves no {name} split"
            )
    return train, valid


def train(cfg: GPTConfig, callbacks: Sequence[pl.Callback] = ()) -> GPTLightningModule:
    """Train (or resume, or fine-tune) a GPT as the config says; returns the trained module.

    Every check that can fail on the user's input runs before the Trainer starts and before
    anything is written into the run folder.
    """
    pl.seed_everything(cfg.model.seed, verbose=False)
    run = prepare_run(cfg)
    tokenizer = build_tokenizer_from_config(cfg)
    vocab_size = padded_vocab_size(cfg, tokenizer)
    train_dataset, valid_dataset = build_datasets(cfg, tokenizer)
    module = GPTLightningModule(cfg, vocab_size)
    if run.resume_from is not None:
        check_structure(module.model, read_checkpoint(run.resume_from, mmap=True),
                        f"resuming from {run.resume_from}")
    elif cfg.restore_from_path is not None:
        # Only for a new run: a resumed one has its own, newer weights in its checkpoint.
        restore_weights(module.model, cfg.restore_from_path)
    trainer = build_trainer(
        cfg, run,
        flops_per_token=matmul_flops_per_token(module.model, cfg.model.encoder_seq_length),
        callbacks=callbacks,
    )
    if trainer.is_global_zero:
        save_config(cfg, run)
        logger.info("run folder: %s", run.log_dir)
    trainer.fit(
        module,
        datamodule=GPTDataModule(cfg, train_dataset, valid_dataset),
        ckpt_path=None if run.resume_from is None else str(run.resume_from),
    )
    if trainer.is_global_zero and cfg.inference.tokens_to_generate > 0:
        print_sample(cfg, module.model.to(trainer.strategy.root_device), tokenizer)
    return module


def print_sample(cfg: GPTConfig, model: GPTModel, tokenizer: Tokenizer) -> None:
    sample_cfg = cfg.inference
    text = generate_text(
        model,
        tokenizer,
        sample_cfg.prompt,
        sample_cfg.tokens_to_generate,
        greedy=sample_cfg.greedy,
        top_k=sample_cfg.top_k,
        temperature=sample_cfg.temperature,
        seed=cfg.model.seed,
    )
    print(f"\n--- sample (prompt {sample_cfg.prompt!r}) ---\n{text}\n---", flush=True)
