"""restore_from_path takes a Hugging Face folder as it is: the run starts from its weights (here a
Llama with grouped-query attention, trained one step on the tiny byte-level corpus), and a
config of another structure is refused with every differing key listed."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.training import train
from megatron_lite.training.checkpointing import model_state_dict, read_checkpoint
from tests.gpt_testing import compose_gpt, tiny_overrides, write_tiny_corpus
from tests.interop.hf_models import transformers

LR = 1e-3
# The byte tokenizer's 259 tokens, padded to a multiple of 16 (tiny_overrides).
PADDED_VOCAB = 272


def llama_overrides(corpus: str, log_dir, folder, **extra) -> list[str]:
    return tiny_overrides(corpus, log_dir, {
        "restore_from_path": str(folder),
        "model.normalization": "rmsnorm", "model.activation": "swiglu", "model.bias": False,
        "model.position_embedding_type": "rope", "model.num_query_groups": 2,
        "model.share_embeddings_and_output_weights": False,
        "trainer.max_steps": 1, "trainer.val_check_interval": 1, "trainer.limit_val_batches": 1,
        "model.optim.lr": LR, "model.optim.sched.warmup_steps": 0, "model.optim.sched.min_lr": LR,
        **extra,
    })


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A Llama of tiny_overrides' shape (2 layers, 32 wide, 4 heads, ffn 64) and vocabulary."""
    torch.manual_seed(6)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=PADDED_VOCAB, max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    folder = tmp_path_factory.mktemp("hf") / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_restore_from_a_hf_folder_trains_from_its_weights(llama_folder, tmp_path):
    corpus = write_tiny_corpus(tmp_path / "tiny_text_document", num_documents=40)
    module = train(compose_gpt(llama_overrides(corpus, tmp_path / "run", llama_folder)))
    start = model_state_dict(read_checkpoint(llama_folder))
    trained = module.model.state_dict()
    assert start.keys() == trained.keys()
    # One AdamW step moves each weight by about lr at most: the run started from the folder's.
    steps = torch.stack([(trained[key] - start[key]).abs().max() for key in start])
    assert 0 < steps.max() <= 1.05 * LR


def test_a_config_of_another_structure_lists_every_difference(llama_folder, tmp_path):
    corpus = write_tiny_corpus(tmp_path / "tiny_text_document", num_documents=40)
    cfg = compose_gpt(llama_overrides(corpus, tmp_path / "run", llama_folder,
                                      **{"model.num_layers": 3, "model.num_query_groups": 4}))
    with pytest.raises(ValueError) as error:
        train(cfg)
    message = str(error.value)
    assert f"restore_from_path={llama_folder}: the checkpoint's model differs in structure" in message
    assert "num_layers: 2 in the checkpoint, 3 in this config" in message
    assert "num_query_groups: 2 in the checkpoint, 4 in this config" in message
