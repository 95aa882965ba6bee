"""scripts/eval.py: loss and perplexity of a checkpoint on a .bin/.idx prefix (all of it or a
split), a jsonl file, or through a Hugging Face folder, each equal to exp(mean loss) computed
here independently: the windows cut from the raw tokens, the model (or HF's) run on them."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megatron_lite.config import GPTModelConfig, TokenizerConfig
from megatron_lite.data import (
    IndexedDataset,
    corrupt_spans,
    corrupted_lengths,
    parse_splits_string,
    raw_length_for_encoder,
    split_boundaries,
    train_sentencepiece,
)
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.tokenizers import ByteTokenizer, build_tokenizer
from tests.gpt_testing import REPO, write_tiny_corpus
from tests.interop.checkpoints import save_checkpoint
from tests.t5_testing import tiny_t5_config

SEQ = 32
BYTE_VOCAB = 272  # the byte tokenizer's 259 tokens padded to a multiple of 16
T5_VOCAB = 288  # and 16 sentinels
SENTINELS = 16


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("eval_script", REPO / "scripts" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny_text_document", num_documents=40)


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    torch.manual_seed(0)
    model = GPTModel(GPTModelConfig(
        num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
        encoder_seq_length=SEQ, max_position_embeddings=SEQ, init_method_std=0.2,
    ), BYTE_VOCAB).eval()
    path = tmp_path_factory.mktemp("gpt") / "gpt.ckpt"
    return model, save_checkpoint(path, model, TokenizerConfig(library="byte"))


def run(script, capsys, tmp_path, *args) -> dict:
    script.main([*map(str, args), "--json", str(tmp_path / "result.json"), "--device", "cpu"])
    assert "perplexity" in capsys.readouterr().out
    return json.loads((tmp_path / "result.json").read_text())


@torch.no_grad()
def window_perplexity(logits_of, tokens: np.ndarray, window: int) -> tuple[float, int]:
    """exp(mean next-token loss) over every position of the whole windows of `tokens`."""
    count = (tokens.size - 1) // window
    windows = torch.from_numpy(np.stack([tokens[w * window:(w + 1) * window + 1]
                                         for w in range(count)]).astype(np.int64))  # (N, window + 1)
    logits = logits_of(windows[:, :-1])  # (N, window, V)
    mean = F.cross_entropy(logits.double().flatten(0, 1), windows[:, 1:].flatten()).item()
    return math.exp(mean), count * window


def test_gpt_on_a_split_of_a_data_prefix(script, capsys, tmp_path, corpus, gpt):
    model, checkpoint = gpt
    result = run(script, capsys, tmp_path, checkpoint, "--data-prefix", corpus, "--split", "valid",
                 "--splits-string", "80,10,10")
    dataset = IndexedDataset(corpus)
    bounds = split_boundaries(parse_splits_string("80,10,10"), len(dataset))
    tokens = np.concatenate([dataset.get(i) for i in range(bounds[1], bounds[2])])
    expected, scored = window_perplexity(model, tokens, SEQ)
    assert result["scored_tokens"] == scored > 0
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["mean_loss"]))
    # All of it, and a shorter window.
    whole = run(script, capsys, tmp_path, checkpoint, "--data-prefix", corpus, "--seq-length", 16,
                "--batch-size", 64)
    all_tokens = np.concatenate([dataset.get(i) for i in range(len(dataset))])
    assert whole["perplexity"] == pytest.approx(window_perplexity(model, all_tokens, 16)[0], rel=1e-5)


def test_gpt_on_a_jsonl_file(script, capsys, tmp_path, gpt):
    model, checkpoint = gpt
    texts = [f"the cat number {i} sees the ball and the moon." for i in range(12)]
    (tmp_path / "held_out.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    result = run(script, capsys, tmp_path, checkpoint, "--jsonl", tmp_path / "held_out.jsonl",
                 "--text-key", "body")
    tokenizer = ByteTokenizer()
    tokens = np.array([i for t in texts for i in tokenizer.encode(t) + [tokenizer.eod_id]])
    assert result["perplexity"] == pytest.approx(window_perplexity(model, tokens, SEQ)[0], rel=1e-5)


def test_a_hugging_face_folder_scores_as_transformers_does(script, capsys, tmp_path):
    """Through the converted model, HF's own GPT-2 perplexity on the same tokens."""
    transformers = pytest.importorskip("transformers")
    texts = [f"the cat number {i} sees the ball and the moon." for i in range(30)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    sentencepiece_model = train_sentencepiece([str(tmp_path / "corpus.jsonl")], str(tmp_path / "sp"), 300)
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=SEQ, vocab_size=320, activation_function="gelu",
        initializer_range=0.2)).eval()
    hf.save_pretrained(tmp_path / "hf")
    shutil.copy(sentencepiece_model, tmp_path / "hf" / "tokenizer.model")
    result = run(script, capsys, tmp_path, tmp_path / "hf", "--jsonl", tmp_path / "corpus.jsonl")
    tokenizer = build_tokenizer("sentencepiece", sentencepiece_model)
    tokens = np.array([i for t in texts for i in tokenizer.encode(t) + [tokenizer.eod_id]])
    expected, _ = window_perplexity(lambda ids: hf(input_ids=ids).logits, tokens, SEQ)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-4)


def test_t5_on_span_corrupted_windows(script, capsys, tmp_path, corpus):
    torch.manual_seed(2)
    stack = dict(init_method_std=0.2)
    cfg = tiny_t5_config(seq_length=48, seq_length_dec=16, stack=stack, seed=7)
    model = T5Model(cfg, T5_VOCAB).eval()
    checkpoint = save_checkpoint(tmp_path / "t5.ckpt", model,
                                 TokenizerConfig(library="byte", num_sentinel_tokens=SENTINELS))
    result = run(script, capsys, tmp_path, checkpoint, "--data-prefix", corpus, "--batch-size", 64)

    tokenizer = ByteTokenizer(SENTINELS)
    dataset = IndexedDataset(corpus)
    tokens = np.concatenate([dataset.get(i) for i in range(len(dataset))])
    raw = raw_length_for_encoder(48, 0.15, 3.0)
    # Every sample of a window length has the same encoder and target lengths: no padding.
    pairs = [corrupt_spans(tokens[w * raw:(w + 1) * raw], np.random.default_rng([7, w]),
                           sentinel_ids=tokenizer.sentinel_ids, eod_id=tokenizer.eod_id)
             for w in range(tokens.size // raw)]
    encoder_inputs = torch.from_numpy(np.stack([encoder_input for encoder_input, _ in pairs]))
    targets = torch.from_numpy(np.stack([target for _, target in pairs]))  # (N, T)
    decoder_inputs = torch.cat([torch.full_like(targets[:, :1], tokenizer.pad_id), targets[:, :-1]], 1)
    with torch.no_grad():
        logits = model(encoder_inputs, decoder_inputs)  # (N, T, V)
    mean = F.cross_entropy(logits.double().flatten(0, 1), targets.flatten()).item()
    assert result["scored_tokens"] == targets.numel()
    assert result["perplexity"] == pytest.approx(math.exp(mean), rel=1e-5)
    assert result["window"] == 48 and corrupted_lengths(raw, 0.15, 3.0)[0] <= 48


def test_bad_requests_exit_with_a_message(script, tmp_path, corpus, gpt):
    _, checkpoint = gpt
    (tmp_path / "short.jsonl").write_text(json.dumps({"text": "a cat"}) + "\n")
    for args, message in (
        (["--jsonl", tmp_path / "short.jsonl"], "fewer than one window of 32"),
        (["--jsonl", tmp_path / "short.jsonl", "--text-key", "body"], "line 1: no string field 'body'"),
        (["--jsonl", tmp_path / "short.jsonl", "--split", "test"], "a split applies to a .bin/.idx"),
        (["--data-prefix", corpus, "--seq-length", 64], "exceeds model.max_position_embeddings=32"),
    ):
        with pytest.raises(SystemExit, match=message):
            script.main([str(checkpoint), *map(str, args)])
