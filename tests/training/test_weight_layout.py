"""Checkpoints of the layout before the fused projections were grouped (qkv as [q | k | v],
cross-attention's kv as [k | v], a gated fc1 as [gate | up]) load into the same model: the same
logits through load_model and restore_from_path, and a resumed run continues exactly (the AdamW
moments of those weights permuted too)."""

from __future__ import annotations

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules.fused_layout import RowGroups, group_rows, ungroup_rows
from megatron_lite.training import train
from megatron_lite.training.checkpointing import (
    checkpoint_config,
    checkpoint_family,
    load_model,
    read_checkpoint,
    restore_weights,
)
from megatron_lite.training.weight_layout import GROUPED, LAYOUT_KEY, regroup_checkpoint
from tests.gpt_testing import compose_gpt, metric_by_step, tiny_overrides
from tests.interop.checkpoints import save_checkpoint
from tests.t5_testing import tiny_t5_config

VOCAB = 64


def old_layout(path, model: torch.nn.Module | None = None, run_cfg=None) -> None:
    """Rewrite the checkpoint at `path` as it was written before the grouped layout: no
    layout key, the grouped tensors' rows (and with run_cfg their AdamW moments) ungrouped.
    `model`: one of the checkpoint's architecture (default: built from its config)."""
    checkpoint = torch.load(path, weights_only=True)
    if model is None:
        with torch.device("meta"):
            model = checkpoint_family(checkpoint).model_type(checkpoint_config(checkpoint).model, VOCAB)
    regroup_checkpoint(checkpoint, model, run_cfg, ungroup_rows)
    del checkpoint[LAYOUT_KEY]
    torch.save(checkpoint, path)


def test_group_rows_interleaves_the_pieces_by_group_and_ungroup_rows_inverts_it():
    rows = torch.arange(12)
    layout = RowGroups((4, 4, 4), 2)  # q, k, v of 4 rows each, in 2 groups
    assert group_rows(rows, layout).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    assert torch.equal(ungroup_rows(group_rows(rows, layout), layout), rows)
    gqa = RowGroups((4, 2, 2), 2)  # 2 q rows, 1 k row, 1 v row per group
    assert group_rows(torch.arange(8), gqa).tolist() == [0, 1, 4, 6, 2, 3, 5, 7]


def gpt_model() -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4,
                         num_query_groups=2, activation="swiglu", bias=True, encoder_seq_length=16,
                         max_position_embeddings=16, position_embedding_type="rope")
    return GPTModel(cfg, VOCAB).eval()


def t5_model() -> T5Model:
    torch.manual_seed(0)
    return T5Model(tiny_t5_config(stack={"activation": "geglu", "num_query_groups": 2, "bias": True}),
                   VOCAB).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=generator)
    with torch.no_grad():
        return model(tokens) if isinstance(model, GPTModel) else model(tokens, tokens[:, :7])


@pytest.mark.parametrize("build", [gpt_model, t5_model], ids=["gpt-gqa-swiglu", "t5-gqa-geglu"])
def test_a_checkpoint_of_the_old_layout_gives_the_same_logits(build, tmp_path):
    model = build()
    path = save_checkpoint(tmp_path / "old.ckpt", model)
    old_layout(path)
    saved = torch.load(path, weights_only=True)
    assert LAYOUT_KEY not in saved
    assert not all(torch.equal(saved["state_dict"]["model." + key], value)
                   for key, value in model.state_dict().items())  # the file really is permuted

    loaded, _ = load_model(path)  # generation, evaluation and export read checkpoints so
    assert read_checkpoint(path)[LAYOUT_KEY] == GROUPED
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    restored = build()
    with torch.no_grad():
        for parameter in restored.parameters():
            parameter.zero_()
    restore_weights(restored, path)  # restore_from_path
    torch.testing.assert_close(logits(restored), logits(model), rtol=0, atol=0)


def test_resume_from_a_checkpoint_of_the_old_layout_continues_exactly(tiny_corpus, tmp_path):
    extra = {"trainer.max_steps": 6, "trainer.val_check_interval": 3,
             "model.num_query_groups": 2, "model.activation": "swiglu"}

    def every_3_steps(directory):
        return ModelCheckpoint(dirpath=directory, filename="{step}", every_n_train_steps=3,
                               save_top_k=-1, monitor=None)

    whole = train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "whole", extra)),
                  callbacks=[every_3_steps(tmp_path / "whole_steps")])
    checkpoint = tmp_path / "whole_steps" / "step=3.ckpt"
    old_layout(checkpoint, whole.model, whole.cfg)
    train(compose_gpt(tiny_overrides(tiny_corpus, tmp_path / "resumed", {
        **extra, "exp_manager.resume_from_checkpoint": f"'{checkpoint}'"})))

    assert metric_by_step(tmp_path / "resumed", "train_loss") == {
        step: value for step, value in metric_by_step(tmp_path / "whole", "train_loss").items() if step >= 3}
    final = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("whole", "resumed")]
    assert final[0]["global_step"] == final[1]["global_step"] == 6
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(final[1]["state_dict"][key], value), key
