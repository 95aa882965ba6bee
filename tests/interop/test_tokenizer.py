"""Tokenizers travel with the weights: a sentencepiece model of ours is read by transformers
into the same ids (T5's sentinels at the top of the vocabulary included), an imported folder's
tokenizer files are copied beside the .ckpt and used from there, a tokenizer.json folder is
read as it is, and a tokenizer larger than the embedding is refused."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_lite.config import GPTModelConfig, TokenizerConfig
from megatron_lite.interop import checkpoint_from_hf, convert_hf_to_checkpoint, export_checkpoint_to_hf
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.tokenizers import build_tokenizer
from megatron_lite.training import build_tokenizer_from_config
from megatron_lite.training.checkpointing import checkpoint_config, read_checkpoint
from tests.interop.checkpoints import save_checkpoint
from tests.interop.hf_models import tiny_gpt2, transformers
from tests.t5_testing import tiny_t5_config

ROWS = 320  # embedding rows: the 300 pieces and 4 sentinels fit
TEXT = "the cat sees a ball.\n    indented  line 7 Zebra \u00e9\u6f22"
SENTINELS = 4


def tiny_rope_gpt() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTModelConfig(
        num_layers=1, hidden_size=32, ffn_hidden_size=48, num_attention_heads=4,
        normalization="rmsnorm", bias=False, activation="swiglu", position_embedding_type="rope",
    ), ROWS)


def tiny_relative_t5() -> T5Model:
    stack = dict(normalization="rmsnorm", bias=False, activation="relu", num_layers=1)
    return T5Model(tiny_t5_config(stack=stack, tokens_head_bias=False), ROWS)


def hf_ids(folder, text: str) -> list[int]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_sentencepiece_export_gives_transformers_the_same_ids(sentencepiece_model, tmp_path):
    ours = build_tokenizer("sentencepiece", sentencepiece_model)
    checkpoint = save_checkpoint(tmp_path / "gpt.ckpt", tiny_rope_gpt(),
                                 TokenizerConfig(library="sentencepiece", model=sentencepiece_model))
    export_checkpoint_to_hf(checkpoint, tmp_path / "hf")
    assert hf_ids(tmp_path / "hf", TEXT) == ours.encode(TEXT)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"], config["pad_token_id"]) == (
        ours.eod_id, ours.bos_id, ours.pad_id)


def test_t5_sentinels_keep_their_ids_both_ways(sentencepiece_model, tmp_path):
    ours = build_tokenizer("sentencepiece", sentencepiece_model, num_sentinel_tokens=SENTINELS)
    tokenizer = TokenizerConfig(library="sentencepiece", model=sentencepiece_model,
                                num_sentinel_tokens=SENTINELS)
    export_checkpoint_to_hf(save_checkpoint(tmp_path / "t5.ckpt", tiny_relative_t5(), tokenizer),
                            tmp_path / "hf")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    names = [f"<extra_id_{n}>" for n in range(SENTINELS)]
    assert hf.convert_tokens_to_ids(names) == ours.sentinel_ids  # counting down from the top
    assert hf(TEXT, add_special_tokens=False)["input_ids"] == ours.encode(TEXT)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["decoder_start_token_id"] == ours.pad_id

    # Back: the folder's tokenizer files go beside the .ckpt, with the sentinel count.
    tokenizer_folder = convert_hf_to_checkpoint(tmp_path / "hf", tmp_path / "back" / "t5.ckpt")
    assert tokenizer_folder == tmp_path / "back" / "t5_tokenizer"
    cfg = checkpoint_config(read_checkpoint(tmp_path / "back" / "t5.ckpt"))
    assert cfg.model.tokenizer.model == str(tokenizer_folder / "tokenizer.model")
    assert cfg.model.tokenizer.num_sentinel_tokens == SENTINELS
    assert build_tokenizer_from_config(cfg).encode(TEXT) == ours.encode(TEXT)
    # ... and out again: the files it came with, as they were.
    export_checkpoint_to_hf(tmp_path / "back" / "t5.ckpt", tmp_path / "hf_again")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        assert (tmp_path / "hf_again" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()


def test_a_tokenizer_json_folder_is_read_as_it_is(sentencepiece_model, tmp_path):
    """A folder whose tokenizer came as tokenizer.json (no sentencepiece model) keeps it."""
    checkpoint = save_checkpoint(tmp_path / "gpt.ckpt", tiny_rope_gpt(),
                                 TokenizerConfig(library="sentencepiece", model=sentencepiece_model))
    export_checkpoint_to_hf(checkpoint, tmp_path / "sp")
    folder = tmp_path / "hf"
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sp").save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tmp_path / "sp").save_pretrained(folder)
    (folder / "tokenizer.model").unlink(missing_ok=True)
    cfg = checkpoint_config(checkpoint_from_hf(folder))
    assert (cfg.model.tokenizer.library, cfg.model.tokenizer.type) == ("huggingface", str(folder))
    assert build_tokenizer_from_config(cfg).encode(TEXT) == hf_ids(folder, TEXT)


def test_a_tokenizer_larger_than_the_embedding_is_refused(sentencepiece_model, tmp_path):
    hf = tiny_gpt2()  # 96 embedding rows
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(open(sentencepiece_model, "rb").read())
    with pytest.raises(ValueError, match="has 300 tokens .*more than the embedding's 96 rows"):
        convert_hf_to_checkpoint(tmp_path / "hf", tmp_path / "gpt.ckpt")
    assert not (tmp_path / "gpt.ckpt").exists() and not (tmp_path / "gpt_tokenizer").exists()

    small = GPTModel(tiny_rope_gpt().cfg, 96)
    checkpoint = save_checkpoint(tmp_path / "small.ckpt", small,
                                 TokenizerConfig(library="sentencepiece", model=sentencepiece_model))
    with pytest.raises(ValueError, match="has 300 tokens .*more than the embedding's 96 rows"):
        export_checkpoint_to_hf(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()
