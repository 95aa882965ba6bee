"""Seq2seq generation: a tiny T5 overfit to two pairs writes their targets back greedily and
with near-greedy sampling; the key/value cache (self-attention keys, the encoder's keys for
cross-attention) changes nothing for any position type, nor through the flash kernel; greedy
equals Hugging Face's generate with copied weights; the sampling options and sentinel handling;
scripts/generate.py on a T5 checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from megatron_lite.generation import (
    encode_with_sentinels,
    fill_in_spans,
    generate_seq2seq_ids,
    sample_next_token,
)
from megatron_lite.models import T5Model
from megatron_lite.tokenizers import ByteTokenizer
from megatron_lite.training import masked_lm_loss
from tests.gpt_testing import REPO
from tests.t5_testing import tiny_t5_config

VOCAB, START, STOP = 64, 0, 1


@pytest.fixture(scope="module")
def overfit():
    """A 2+2-layer T5 trained on two (input, target) pairs until it knows them by heart."""
    torch.manual_seed(0)
    model = T5Model(tiny_t5_config(seq_length=20, seq_length_dec=12), VOCAB)
    text_enc = torch.randint(4, VOCAB, (2, 20))
    enc_mask = torch.arange(20)[None, :] < torch.tensor([[20], [15]])
    target = torch.randint(4, VOCAB, (2, 8))
    target[:, -1] = STOP
    text_dec = torch.cat([torch.full((2, 1), START), target[:, :-1]], dim=1)  # teacher forcing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = masked_lm_loss(model(text_enc, text_dec, enc_mask), target, torch.ones(2, 8))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss < 0.01
    return model.eval(), text_enc, enc_mask, target


def test_greedy_writes_the_learned_targets(overfit):
    model, text_enc, enc_mask, target = overfit
    out = generate_seq2seq_ids(model, text_enc, 11, start_id=START, stop_id=STOP, enc_mask=enc_mask, greedy=True)
    assert torch.equal(out, target)  # both rows stop at STOP together: 8 tokens, not 11


def test_sampling_near_the_mode_writes_them_too_and_is_seeded(overfit):
    model, text_enc, enc_mask, target = overfit
    for options in (dict(top_k=1), dict(top_p=0.05), dict(temperature=0.05)):
        out = generate_seq2seq_ids(model, text_enc, 11, start_id=START, stop_id=STOP, enc_mask=enc_mask,
                                   generator=torch.Generator().manual_seed(0), **options)
        assert torch.equal(out, target), options
    runs = [generate_seq2seq_ids(model, text_enc, 6, start_id=START, enc_mask=enc_mask, temperature=5.0,
                                 generator=torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("position", ["relative", "learned_absolute", "alibi", "kerple"])
def test_the_cache_changes_nothing(position):
    torch.manual_seed(0)
    model = T5Model(tiny_t5_config(stack={"position_embedding_type": position,
                                          "num_query_groups": 2}), VOCAB).eval()
    text_enc = torch.randint(0, VOCAB, (2, 20))
    enc_mask = torch.arange(20)[None, :] < torch.tensor([[20], [13]])
    cached = generate_seq2seq_ids(model, text_enc, 10, start_id=START, enc_mask=enc_mask, greedy=True)
    uncached = generate_seq2seq_ids(model, text_enc, 10, start_id=START, enc_mask=enc_mask,
                                    greedy=True, use_cache=False)
    assert torch.equal(cached, uncached)


def test_the_flash_kernel_decodes_with_the_cache():
    from tests.modules.test_attention import needs_kernel_on_cpu

    needs_kernel_on_cpu()
    outputs = []
    for flash in (False, True):
        torch.manual_seed(0)
        # One layer a stack: the per-layer caches are tested above, here the kernel's decode.
        model = T5Model(tiny_t5_config(stack={"use_flash_attention": flash, "num_layers": 1}), VOCAB).eval()
        outputs.append(generate_seq2seq_ids(model, torch.randint(0, VOCAB, (2, 20)), 6,
                                            start_id=START, greedy=True))
    assert torch.equal(outputs[0], outputs[1])


def test_a_stopped_row_repeats_the_stop_id_while_the_other_continues():
    torch.manual_seed(0)
    model = T5Model(tiny_t5_config(), VOCAB).eval()
    text_enc = torch.randint(0, VOCAB, (2, 20))
    free = generate_seq2seq_ids(model, text_enc, 6, start_id=START, greedy=True)
    stop = int(free[0, 2])  # row 0 writes it third
    out = generate_seq2seq_ids(model, text_enc, 6, start_id=START, stop_id=stop, greedy=True)
    first_stop = [row.tolist().index(stop) if stop in row.tolist() else None for row in free]
    for row in range(2):
        end = first_stop[row]
        if end is None:
            assert torch.equal(out[row], free[row])
        else:
            assert torch.equal(out[row, : end + 1], free[row, : end + 1])
            assert (out[row, end:] == stop).all()


def test_greedy_equals_hugging_faces_generate():
    pytest.importorskip("transformers")
    from tests.interop.hf_models import VOCAB as HF_VOCAB  # noqa: PLC0415
    from tests.interop.hf_models import tiny_t5  # noqa: PLC0415
    from tests.models.test_t5_vs_hf import converted  # noqa: PLC0415

    hf = tiny_t5("t5")  # relu, tied, 2 encoder and 3 decoder layers
    ours = converted(hf).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # sharper logits than at init, so the argmax is never a near tie
        ours.word_embeddings.weight.mul_(4)
        hf.shared.weight.mul_(4)
    text_enc = torch.randint(2, HF_VOCAB, (2, 20))
    enc_mask = torch.arange(20)[None, :] < torch.tensor([[20], [11]])
    expected = hf.generate(input_ids=text_enc, attention_mask=enc_mask.long(), max_new_tokens=10,
                           do_sample=False, num_beams=1, min_new_tokens=10, eos_token_id=None,
                           use_cache=False)  # HF 5.24's cache assumes equal stack depths
    actual = generate_seq2seq_ids(ours, text_enc, 10, start_id=0, enc_mask=enc_mask, greedy=True)
    assert torch.equal(actual, expected[:, 1:])  # HF's output starts with the start token


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = {int(sample_next_token(logits, top_p=0.7, generator=torch.Generator().manual_seed(s)))
             for s in range(200)}
    assert draws == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    draws = {int(sample_next_token(logits, top_p=0.8, generator=torch.Generator().manual_seed(s)))
             for s in range(200)}
    assert draws == {0, 1}  # reaching 0.8 exactly needs no third token
    assert int(sample_next_token(logits, top_p=0.3)) == 0


def test_sentinels_in_a_prompt_and_filling_in_the_spans():
    tokenizer = ByteTokenizer(num_sentinel_tokens=4)
    ids = encode_with_sentinels(tokenizer, "ab <extra_id_0> cd<extra_id_1>")
    assert ids == [97, 98, tokenizer.sentinel_id(0), 99, 100, tokenizer.sentinel_id(1)]
    output = [tokenizer.sentinel_id(0), 120, tokenizer.sentinel_id(1), 121, 122, tokenizer.sentinel_id(2), 123]
    assert fill_in_spans(ids, output, tokenizer.sentinel_ids) == [97, 98, 120, 99, 100, 121, 122]
    # A sentinel the output never wrote leaves nothing in its place.
    assert fill_in_spans(ids, output[:2], tokenizer.sentinel_ids) == [97, 98, 120, 99, 100]
    with pytest.raises(ValueError, match="sentinel 7 does not exist"):
        encode_with_sentinels(tokenizer, "x <extra_id_7>")


def test_generate_script_on_a_t5_checkpoint(t5_trained_run):
    checkpoint = t5_trained_run.log_dir / "checkpoints" / "last.ckpt"
    result = subprocess.run(
        [sys.executable, "scripts/generate.py", str(checkpoint), "--prompt", "the cat <extra_id_0> the ball.",
         "--tokens-to-generate", "8", "--top-k", "5", "--top-p", "0.9", "--seed", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    output, filled = result.stdout.splitlines()[:2]
    assert output.startswith("output:    ") and filled.startswith("filled in: the cat")


def test_learned_positions_bound_the_lengths():
    model = T5Model(tiny_t5_config(stack={"position_embedding_type": "learned_absolute"}), VOCAB).eval()
    # max_position_embeddings = 20 (the encoder length)
    with pytest.raises(ValueError, match=r"tokens_to_generate \(21\) exceeds the learned positions"):
        generate_seq2seq_ids(model, torch.zeros(1, 20, dtype=torch.long), 21, start_id=START)
    with pytest.raises(ValueError, match=r"the encoder input's length \(24\) exceeds"):
        generate_seq2seq_ids(model, torch.zeros(1, 24, dtype=torch.long), 4, start_id=START)
    assert generate_seq2seq_ids(model, torch.zeros(1, 20, dtype=torch.long), 20, start_id=START).shape == (1, 20)
