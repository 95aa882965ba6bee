"""Perplexity at multiples of the training length, on tiny byte-level GPTs trained for a few
steps: the numbers against an independent computation, learned positions past their table, the
interpolation override, and the command line (table, JSON, PNG)."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from megatron_lite.data import IndexedDataset
from megatron_lite.evaluation import evaluate_checkpoint, load_gpt_for_evaluation
from megatron_lite.training import load_model, masked_lm_loss, train
from tests.gpt_testing import REPO, compose_gpt, tiny_overrides, write_tiny_corpus

SEQ = 32  # tiny_overrides' model.encoder_seq_length (and max_position_embeddings)
MAX_TOKENS = 512  # 16 windows at 1x, 8 at 2x; the tiny corpus's test split holds about 1500
TYPES = ("learned_absolute", "rope", "alibi")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny_text_document")


@pytest.fixture(scope="module")
def checkpoints(corpus, tmp_path_factory) -> dict[str, str]:
    """last.ckpt of 4 training steps per position type, with a test split of 16 documents.

    A large init_method_std makes attention sharp from the first step: with the default 0.02,
    scores stay near 0 for many steps, attention near uniform, and positions barely matter.
    """
    paths = {}
    for position in TYPES:
        log_dir = tmp_path_factory.mktemp("runs") / position
        train(compose_gpt(tiny_overrides(corpus, log_dir, {
            "model.position_embedding_type": position, "model.data.splits_string": "'80,10,10'",
            "model.init_method_std": 0.3, "trainer.max_steps": 4, "trainer.limit_val_batches": 1,
        })))
        paths[position] = str(log_dir / "checkpoints" / "last.ckpt")
    return paths


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "eval_length_extrapolation", REPO / "scripts" / "eval_length_extrapolation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(checkpoint: str, **kwargs):
    return evaluate_checkpoint(checkpoint, [1, 2], max_tokens=MAX_TOKENS, device="cpu", **kwargs)


def test_perplexity_at_the_training_length_is_exp_of_the_mean_token_loss(checkpoints, corpus):
    result = evaluate(checkpoints["rope"])
    assert result.held_out == f"the test split (splits_string '80,10,10') of {corpus}"
    assert result.held_out_tokens == MAX_TOKENS
    assert [(r.windows, r.scored_tokens) for r in result.lengths] == [(16, 512), (8, 512)]

    # Independently: the last 16 of the 160 documents, back to back, in windows of SEQ tokens,
    # scored by the model with its default positions and the training loss.
    dataset = IndexedDataset(corpus)
    stream = torch.from_numpy(np.concatenate([dataset.get(d) for d in range(144, 160)]).astype(np.int64))
    inputs = stream[:MAX_TOKENS].view(-1, SEQ)  # (16, SEQ)
    labels = stream[1:MAX_TOKENS + 1].view(-1, SEQ)  # (16, SEQ)
    model, _ = load_model(checkpoints["rope"])
    with torch.no_grad():
        loss = masked_lm_loss(model(inputs), labels, torch.ones(labels.shape))
    assert result.lengths[0].mean_loss == pytest.approx(loss.item(), rel=1e-5)
    assert result.lengths[0].perplexity == pytest.approx(math.exp(loss.item()), rel=1e-5)
    assert result.lengths[1].perplexity != pytest.approx(result.lengths[0].perplexity, rel=1e-4)


def test_learned_positions_past_their_table_are_an_entry_not_an_error(checkpoints):
    at_1x, at_2x = evaluate(checkpoints["learned_absolute"]).lengths
    assert math.isfinite(at_1x.perplexity) and at_1x.skipped is None
    assert at_2x.perplexity is None and at_2x.mean_loss is None and at_2x.scored_tokens == 0
    assert at_2x.skipped == f"past max_position_embeddings={SEQ} ({2 * SEQ} tokens)"


def test_interpolation_factor_changes_rope_and_is_refused_elsewhere(checkpoints):
    plain = evaluate(checkpoints["rope"])
    interpolated = evaluate(checkpoints["rope"], seq_len_interpolation_factor=2)
    assert interpolated.label == "rope (interpolation x2)" and plain.label == "rope"
    assert interpolated.config["seq_len_interpolation_factor"] == 2
    for before, after in zip(plain.lengths, interpolated.lengths, strict=True):
        assert abs(after.mean_loss - before.mean_loss) > 0.01
    refusal = r"applies to rope checkpoints only; .* position_embedding_type='alibi'"
    with pytest.raises(ValueError, match=refusal):
        load_gpt_for_evaluation(checkpoints["alibi"], 2.0)
    with pytest.raises(ValueError, match="seq_len_interpolation_factor must be >= 1"):
        load_gpt_for_evaluation(checkpoints["rope"], 0.5)


def test_held_out_text_limits(checkpoints, corpus):
    whole_file = evaluate_checkpoint(checkpoints["alibi"], [1], data_prefix=corpus, max_tokens=100,
                                     device="cpu")
    assert whole_file.held_out == f"every document of {corpus}" and whole_file.held_out_tokens == 96
    with pytest.raises(ValueError, match="max_tokens=100 is less than one window of 256 tokens"):
        evaluate_checkpoint(checkpoints["alibi"], [1, 8], max_tokens=100, device="cpu")
    with pytest.raises(ValueError, match=r"holds \d+ tokens, fewer than one window of 4096"):
        evaluate_checkpoint(checkpoints["alibi"], [128], max_tokens=10**6, device="cpu")


def test_command_line_writes_table_json_and_plot(checkpoints, script, tmp_path, capsys):
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    png = ["--png", str(tmp_path / "ppl.png")] if has_matplotlib else []
    script.main([checkpoints[position] for position in TYPES] + [
        "--lengths", "1,2", "--seq-len-interpolation-factor", "2", "--max-tokens", str(MAX_TOKENS),
        "--device", "cpu", "--json", str(tmp_path / "ppl.json"), *png])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("held-out text: the test split")
    assert lines[0].endswith(f"{MAX_TOKENS} tokens scored at every length")
    assert lines[1:3] == ["| position type | L | 1x | 2x |", "|---|---|---|---|"]
    record = json.loads((tmp_path / "ppl.json").read_text())
    assert record["command"].startswith("python scripts/eval_length_extrapolation.py ")
    assert record["date"] and record["device"].startswith("cpu") and record["max_tokens"] == MAX_TOKENS
    labels = [row["label"] for row in record["results"]]
    assert labels == ["learned_absolute", "rope", "rope (interpolation x2)", "alibi"]
    for line, row in zip(lines[3:], record["results"], strict=True):
        one, two = row["lengths"]
        assert line.startswith(f"| {row['label']} | {SEQ} | {one['perplexity']:.2f} | ")
        assert line.endswith(f" | {two['skipped'] or format(two['perplexity'], '.2f')} |")
    assert record["results"][0]["lengths"][1]["skipped"].startswith("past max_position_embeddings")
    if has_matplotlib:
        assert (tmp_path / "ppl.png").read_bytes().startswith(PNG_SIGNATURE)


def test_command_line_refuses_interpolation_without_a_rope_checkpoint(checkpoints, script):
    with pytest.raises(SystemExit, match="Error: --seq-len-interpolation-factor applies to rope "
                                         r"checkpoints only; the checkpoints given use \['alibi'\]"):
        script.main([checkpoints["alibi"], "--seq-len-interpolation-factor", "2", "--device", "cpu"])
