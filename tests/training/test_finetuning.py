"""Fine-tuning runs (conf/megatron_gpt_sft_config.yaml, megatron_t5_finetuning_config.yaml) from the
tiny pretrained models of conftest.py: the loss on the answers falls, packing changes nothing of
a step, LoRA checkpoints hold the adapters only and leave the base untouched, a merged export
equals the adapted model, and a LoRA run resumes exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from megatron_lite.interop import export_checkpoint_to_hf
from megatron_lite.tokenizers import ByteTokenizer
from megatron_lite.models import GPTModel
from megatron_lite.training import family_of, load_model, restore_weights, train
from megatron_lite.training.checkpointing import model_state_dict, read_checkpoint
from tests.gpt_testing import metric_by_step
from tests.training.sft_testing import (
    ANSWERS,
    compose_sft,
    gpt_sft_overrides,
    qa_records,
    t5_sft_overrides,
    write_jsonl,
)
from tests.training.test_train import StopAfter

LORA = {"model.peft.peft_scheme": "lora", "model.peft.lora_tuning.adapter_dim": 4}
FAST = {"trainer.max_steps": 12, "model.optim.lr": 1e-2, "model.optim.sched.min_lr": 1e-3}


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("qa")
    return write_jsonl(folder / "train.jsonl", qa_records(4)), write_jsonl(folder / "valid.jsonl", qa_records(2))


def base_checkpoint(run) -> Path:
    return run.log_dir / "checkpoints" / "last.ckpt"


def mean_loss(model: torch.nn.Module, cfg, dataset) -> float:
    """The family's loss over every sample of `dataset` (one pass), weighted by loss tokens."""
    loss = family_of(cfg).loss
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = {key: value[None] for key, value in dataset[index].items()}
            tokens = float(batch["loss_mask"].sum())
            total += float(loss(model, batch, cfg)) * tokens
            count += tokens
    return total / count


def test_gpt_sft_lowers_the_answer_loss(trained_run, qa_files, tmp_path):
    cfg = compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "sft", base_checkpoint(trained_run), FAST))
    train_set = family_of(cfg).build_datasets(cfg, ByteTokenizer())[0].dataset  # one pass
    base, _ = load_model(base_checkpoint(trained_run))
    before = mean_loss(base, cfg, train_set)
    after = mean_loss(train(cfg).model, cfg, train_set)
    assert after < 0.6 * before, (before, after)


def test_packing_gives_the_loss_and_gradient_of_the_examples_alone(trained_run, tmp_path):
    # Five short examples: unpacked, a global batch of five samples; packed, one sample holding
    # all five (each with its own positions and segment). The first step's mean loss over the
    # answer tokens, and its gradient, are the same.
    records = [{"input": a, "output": b} for a, b in
               (("ab", "cd"), ("efg", "h"), ("i", "jkl"), ("mn", "op"), ("q", "r"))]
    data = write_jsonl(tmp_path / "short.jsonl", records)
    common = {"trainer.max_steps": 1, "trainer.val_check_interval": 1, "model.data.train_ds.shuffle": False,
              "model.data.train_ds.prompt_template": "'{input}={output}'"}
    runs = {"alone": {"model.micro_batch_size": 5, "model.global_batch_size": 5},
            "packed": {"model.micro_batch_size": 1, "model.global_batch_size": 1,
                       "model.data.train_ds.packed_sequence": True}}
    for name, extra in runs.items():
        cfg = compose_sft(gpt_sft_overrides(data, data, tmp_path / name, base_checkpoint(trained_run),
                                            {**common, **extra}))
        assert len(family_of(cfg).build_datasets(cfg, ByteTokenizer())[0].dataset) == (5 if name == "alone" else 1)
        train(cfg)
    for metric in ("train_loss", "grad_norm"):
        alone, packed = (metric_by_step(tmp_path / name, metric)[0] for name in runs)
        assert packed == pytest.approx(alone, rel=1e-5), metric


def test_lora_saves_the_adapters_only_and_exports_them_merged(trained_run, qa_files, tmp_path):
    cfg = compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "lora", base_checkpoint(trained_run), {
        **LORA, "model.peft.lora_tuning.target_modules": "[attention_qkv,mlp_fc2]"}))
    module = train(cfg)
    checkpoint = read_checkpoint(tmp_path / "lora" / "checkpoints" / "last.ckpt")
    saved = checkpoint["state_dict"]
    assert len(saved) == 8 and all(key.endswith((".lora_a", ".lora_b")) for key in saved)  # 2 layers x 2 targets
    assert len(checkpoint["optimizer_states"][0]["state"]) == 8  # AdamW held the adapters alone
    assert all(saved[key].abs().sum() > 0 for key in saved if key.endswith(".lora_b"))  # they trained
    base = model_state_dict(read_checkpoint(base_checkpoint(trained_run)))
    for name, tensor in module.model.state_dict().items():
        if not name.endswith((".lora_a", ".lora_b")):
            assert torch.equal(tensor, base[name.replace(".base.", ".")]), name

    tokens = torch.randint(0, 259, (2, 32))
    with torch.no_grad():
        adapted = module.model.eval()(tokens)
        merged, _ = load_model(tmp_path / "lora" / "checkpoints" / "last.ckpt")
        torch.testing.assert_close(merged(tokens), adapted, rtol=1e-5, atol=1e-5)
        export_checkpoint_to_hf(tmp_path / "lora" / "checkpoints" / "last.ckpt", tmp_path / "hf")
        exported, _ = load_model(tmp_path / "hf")  # read back through the converter
        torch.testing.assert_close(exported(tokens), adapted, rtol=1e-5, atol=1e-5)
        restored = GPTModel(cfg.model, module.model.vocab_size)  # a new run from the LoRA checkpoint
        restore_weights(restored, tmp_path / "lora" / "checkpoints" / "last.ckpt")
        torch.testing.assert_close(restored.eval()(tokens), adapted, rtol=1e-5, atol=1e-5)


def test_a_lora_run_resumes_exactly(trained_run, qa_files, tmp_path):
    # Dropout in the adapters and the model, two micro-batches a step: the RNG state and the
    # data position must come back, and the frozen base from restore_from_path.
    extra = {**LORA, "model.micro_batch_size": 2, "model.hidden_dropout": 0.1,
             "model.peft.lora_tuning.adapter_dropout": 0.1}
    restore = base_checkpoint(trained_run)
    train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "whole", restore, extra)))
    train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "parts", restore, extra)), callbacks=[StopAfter(4)])
    train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "parts", restore,
                                        {**extra, "exp_manager.resume_if_exists": True})))
    for metric in ("train_loss", "val_loss", "grad_norm", "lr"):
        assert metric_by_step(tmp_path / "parts", metric) == metric_by_step(tmp_path / "whole", metric), metric
    final = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"] for run in ("whole", "parts")]
    assert final[0].keys() == final[1].keys()
    for key, value in final[0].items():
        assert torch.equal(final[1][key], value), key


def test_resuming_lora_refuses_another_base_or_other_adapters(trained_run, qa_files, tmp_path):
    restore = tmp_path / "base.ckpt"
    shutil.copy(base_checkpoint(trained_run), restore)
    extra = {**LORA, "trainer.max_steps": 4, "trainer.val_check_interval": 2}
    train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "run", restore, extra)), callbacks=[StopAfter(2)])
    resume = {**extra, "exp_manager.resume_if_exists": True}
    with pytest.raises(ValueError, match="adapter_dim: 4 in the checkpoint, 8 in this config"):
        train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "run", restore,
                                            {**resume, "model.peft.lora_tuning.adapter_dim": 8})))
    checkpoint = torch.load(restore, weights_only=True)
    checkpoint["state_dict"]["model.decoder.final_norm.weight"] += 0.5  # the base has changed
    torch.save(checkpoint, restore)
    with pytest.raises(ValueError, match="trained on other frozen weights"):
        train(compose_sft(gpt_sft_overrides(*qa_files, tmp_path / "run", restore, resume)))
    restore.unlink()
    with pytest.raises(FileNotFoundError, match="its base model must stay at that path"):
        load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")


def test_t5_seq2seq_fine_tuning_lowers_the_loss_and_lora_merges(t5_trained_run, qa_files, tmp_path):
    restore = base_checkpoint(t5_trained_run)
    cfg = compose_sft(t5_sft_overrides(*qa_files, tmp_path / "t5", restore, FAST), t5=True)
    tokenizer = ByteTokenizer(num_sentinel_tokens=16)
    train_set = family_of(cfg).build_datasets(cfg, tokenizer)[0].dataset
    sample = train_set[0]
    assert tokenizer.decode(sample["text_enc"][sample["enc_mask"]].tolist()) == "Q: the cat A: "
    assert tokenizer.decode(sample["labels"][sample["dec_mask"]].tolist()) == ANSWERS["the cat"]
    before = mean_loss(load_model(restore)[0], cfg, train_set)
    after = mean_loss(train(cfg).model, cfg, train_set)
    assert after < 0.6 * before, (before, after)

    lora = train(compose_sft(t5_sft_overrides(*qa_files, tmp_path / "t5_lora", restore, LORA), t5=True))
    saved = read_checkpoint(tmp_path / "t5_lora" / "checkpoints" / "last.ckpt")["state_dict"]
    # q, k, v of each layer's self-attention, and the decoder's cross-attention q and kv
    assert len(saved) == 2 * (2 + 2 + 2 * 2)
    text_enc, text_dec = torch.randint(0, 259, (2, 32)), torch.randint(0, 259, (2, 16))
    enc_mask = torch.ones(2, 32, dtype=torch.bool)
    with torch.no_grad():
        adapted = lora.model.eval()(text_enc, text_dec, enc_mask)
        merged, _ = load_model(tmp_path / "t5_lora" / "checkpoints" / "last.ckpt")
        torch.testing.assert_close(merged(text_enc, text_dec, enc_mask), adapted, rtol=1e-5, atol=1e-5)
