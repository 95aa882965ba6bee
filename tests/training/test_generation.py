"""Generation: greedy decoding is the argmax of a full forward pass, top-1 sampling is greedy,
padding ids are never produced, eod stops; scripts/generate.py samples from a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.generation import generate_ids
from megatron_lite.models import GPTModel
from tests.gpt_testing import REPO


def tiny_model(vocab: int = 40) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                         encoder_seq_length=12, max_position_embeddings=12, hidden_dropout=0.0,
                         attention_dropout=0.0, init_method_std=0.5)
    return GPTModel(cfg, vocab).eval()


def test_greedy_is_the_argmax_of_a_full_forward_pass_over_a_sliding_window():
    model = tiny_model()
    prompt = [3, 1, 4, 1, 5]
    generated = generate_ids(model, prompt, 14, greedy=True)
    assert len(generated) == 14
    ids = list(prompt)
    for token in generated:
        with torch.no_grad():
            logits = model(torch.tensor([ids[-12:]]))  # the model's context is 12 tokens
        assert token == int(logits[0, -1].argmax())
        ids.append(token)


def test_top_1_sampling_is_greedy_and_sampling_is_seeded():
    model = tiny_model()
    greedy = generate_ids(model, [7, 8], 10, greedy=True)
    assert generate_ids(model, [7, 8], 10, top_k=1, generator=torch.Generator().manual_seed(1)) == greedy
    runs = [generate_ids(model, [7, 8], 10, top_k=0, temperature=2.0,
                         generator=torch.Generator().manual_seed(seed)) for seed in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]


def test_padding_rows_are_never_generated_and_eod_stops():
    model = tiny_model(vocab=48)
    with torch.no_grad():  # make the padding rows (ids 40..47) by far the likeliest
        model.embedding.word_embeddings.weight[40:] *= 100
    out = generate_ids(model, [1, 2], 20, top_k=0, vocab_size=40, generator=torch.Generator().manual_seed(0))
    assert len(out) == 20 and max(out) < 40
    first = generate_ids(model, [1, 2], 1, greedy=True, vocab_size=40)[0]
    assert generate_ids(model, [1, 2], 20, greedy=True, vocab_size=40, stop_id=first) == [first]


def test_generate_script_samples_from_a_checkpoint(trained_run):
    checkpoint = trained_run.log_dir / "checkpoints" / "last.ckpt"
    result = subprocess.run(
        [sys.executable, "scripts/generate.py", str(checkpoint), "--prompt", "the cat",
         "--tokens-to-generate", "12", "--top-k", "0", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n")
    assert text.startswith("the cat") and text[len("the cat"):].strip()
