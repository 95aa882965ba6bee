"""Generation: greedy decoding is the argmax of a full forward pass, the key/value cache changes
nothing (every position type, batched prompts of several lengths, the flash kernel's decode
step), top-1 sampling is greedy, the repetition penalty, padding ids are never produced, eod and
stop strings stop; scripts/generate.py samples from a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.generation import generate_batch, generate_ids, generate_texts
from megatron_lite.models import GPTModel
from megatron_lite.tokenizers import ByteTokenizer
from tests.gpt_testing import REPO
from tests.modules.test_attention import needs_kernel_on_cpu


def tiny_model(vocab: int = 40, position: str = "learned_absolute", query_groups: int | None = None,
               flash: bool = False) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                         num_query_groups=query_groups, encoder_seq_length=12,
                         max_position_embeddings=12, hidden_dropout=0.0, attention_dropout=0.0,
                         init_method_std=0.5, position_embedding_type=position,
                         use_flash_attention=flash)
    return GPTModel(cfg, vocab).eval()


def test_greedy_is_the_argmax_of_a_full_forward_pass():
    model = tiny_model()
    prompt = [3, 1, 4, 1, 5]
    generated = generate_ids(model, prompt, 7, greedy=True)
    assert len(generated) == 7
    ids = list(prompt)
    for token in generated:
        with torch.no_grad():
            logits = model(torch.tensor([ids]))
        assert token == int(logits[0, -1].argmax())
        ids.append(token)


def test_learned_positions_refuse_to_generate_past_their_table():
    with pytest.raises(ValueError, match="a prompt of 5 tokens plus 8 new tokens is longer than "
                                         "model.max_position_embeddings=12"):
        generate_ids(tiny_model(), [3, 1, 4, 1, 5], 8, greedy=True)


@pytest.mark.parametrize("position", ["learned_absolute", "rope", "xpos", "alibi", "kerple",
                                      "kerple_power", "sandwich"])
def test_the_cache_changes_nothing_and_batches_equal_single_prompts(position):
    model = tiny_model(position=position, query_groups=2)
    prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5]]
    cached = generate_batch(model, prompts, 6, greedy=True)
    assert cached == generate_batch(model, prompts, 6, greedy=True, use_cache=False)
    assert cached == [generate_ids(model, prompt, 6, greedy=True) for prompt in prompts]


def test_the_flash_kernel_decodes_with_the_cache():
    needs_kernel_on_cpu()
    prompts = [[3, 1, 4, 1, 5], [9, 2]]
    plain = generate_batch(tiny_model(position="alibi"), prompts, 5, greedy=True)
    assert generate_batch(tiny_model(position="alibi", flash=True), prompts, 5, greedy=True) == plain


def test_repetition_penalty_discourages_what_was_seen():
    model = tiny_model()
    free = generate_ids(model, [7, 8], 7, greedy=True)
    penalized = generate_ids(model, [7, 8], 7, greedy=True, repetition_penalty=1e6)
    assert len(set(penalized)) == len(penalized) and not set(penalized) & {7, 8}
    assert free != penalized


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
    out = generate_ids(model, [1, 2], 10, top_k=0, vocab_size=40, generator=torch.Generator().manual_seed(0))
    assert len(out) == 10 and max(out) < 40
    first = generate_ids(model, [1, 2], 1, greedy=True, vocab_size=40)[0]
    assert generate_ids(model, [1, 2], 10, greedy=True, vocab_size=40, stop_id=first) == [first]


def test_stop_strings_end_the_text_before_them():
    model, tokenizer = tiny_model(vocab=264), ByteTokenizer()
    free = generate_texts(model, tokenizer, ["ab"], 8, greedy=True)[0]
    stop = free[3:5]  # two generated characters
    stopped = generate_texts(model, tokenizer, ["ab"], 8, greedy=True, stop_strings=[stop])[0]
    assert stopped == free[:free.index(stop, 2)]


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


def test_generate_script_takes_a_batch_of_prompts_from_a_file(trained_run, tmp_path):
    checkpoint = trained_run.log_dir / "checkpoints" / "last.ckpt"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\na dog sees\n")

    def generate(*extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "scripts/generate.py", str(checkpoint), "--prompts-file", str(prompts),
             "--max-new-tokens", "8", "--greedy", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
        return result.stdout

    texts = generate().removesuffix("\n").split("\n\n")
    assert [text[:len(prompt)] for text, prompt in zip(texts, ("the cat", "a dog sees"))] == [
        "the cat", "a dog sees"]
    assert generate("--no-cache") == generate()
