"""The layout keys: tensor / context parallel sizes, NeMo's FSDP keys, the data-parallel size
that is left, and the errors naming the keys."""

from __future__ import annotations

import pytest
import torch

from tests.config.test_nemo_configs import compose_nemo
from tests.gpt_testing import compose_gpt
from tests.t5_testing import compose_t5

DATA = ["model.data.data_prefix=[/data/a_text_document]"]


def test_the_data_parallel_size_is_what_tensor_and_context_parallel_leave():
    cfg = compose_gpt([*DATA, "trainer.devices=8", "trainer.num_nodes=2", "model.tensor_model_parallel_size=2",
                       "model.context_parallel_size=2", "model.sequence_parallel=true",
                       "model.micro_batch_size=2", "model.global_batch_size=16"])
    assert cfg.data_parallel_size == 4 and cfg.accumulate_grad_batches == 2
    assert cfg.model.uses_dtensor and cfg.model.model_parallel_size == 4


def test_nemo_fsdp_keys_load_from_nemos_yaml_and_choose_the_layout():
    cfg = compose_nemo("megatron_gpt_config", ["model.fsdp=True", "model.fsdp_grad_reduce_dtype=bf16",
                                               "model.fsdp_sharded_checkpoint=True", "trainer.devices=2", "trainer.precision=bf16",
                                               "model.micro_batch_size=4", "model.global_batch_size=8"])
    assert cfg.model.fsdp and cfg.model.uses_dtensor and cfg.data_parallel_size == 2
    assert cfg.model.grad_reduce_dtype == torch.bfloat16
    assert cfg.model.fsdp_sharding_strategy == "full"


def test_nemos_integer_reduce_dtype_is_read():
    cfg = compose_gpt([*DATA, "model.fsdp=true", "model.fsdp_grad_reduce_dtype=16"])
    assert cfg.model.grad_reduce_dtype == torch.float16


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=6", "model.tensor_model_parallel_size=4"],
     "6 processes cannot be split into model.tensor_model_parallel_size=4 x model.context_parallel_size=1"),
    (["trainer.devices=2", "model.context_parallel_size=3", "model.encoder_seq_length=504"],
     "2 processes cannot be split into model.tensor_model_parallel_size=1 x model.context_parallel_size=3"),
    (["model.context_parallel_size=0"], "model.context_parallel_size must be >= 1"),
    (["model.fsdp_sharding_strategy=grad"], "model.fsdp_sharding_strategy='grad' applies with model.fsdp=True only"),
    (["model.fsdp=true", "model.fsdp_sharding_strategy=zero2"], "model.fsdp_sharding_strategy='zero2' is not one of"),
    (["model.fsdp=true", "model.fsdp_grad_reduce_dtype=int8"], "model.fsdp_grad_reduce_dtype='int8' is not one of"),
    (["model.fsdp_sharded_checkpoint=true"], "model.fsdp_sharded_checkpoint=True needs a sharded layout"),
    (["model.fsdp=true", "trainer.precision=16"], "trainer.precision=16 with model.fsdp=True"),
    (["model.fsdp=true", "trainer.devices=2", "trainer.strategy=ddp"], "trainer.strategy='ddp' with model.fsdp"),
    (["trainer.devices=2", "trainer.num_nodes=2", "model.tensor_model_parallel_size=4", "model.fsdp=true",
      "model.fsdp_sharding_strategy=hybrid"], "'hybrid' shards within a node"),
    (["trainer.devices=2", "model.tensor_model_parallel_size=2",
      "model.num_attention_heads=3", "model.hidden_size=384"],
     "model.num_attention_heads=3 is not divisible by model.tensor_model_parallel_size=2"),
    (["trainer.devices=4", "model.tensor_model_parallel_size=4", "model.num_query_groups=2"],
     "model.num_query_groups=2 is not divisible by model.tensor_model_parallel_size=4"),
    (["trainer.devices=2", "model.tensor_model_parallel_size=2", "model.override_vocab_size=255"],
     "model.override_vocab_size=255 is not divisible"),
    (["trainer.devices=4", "model.tensor_model_parallel_size=2", "model.micro_batch_size=4",
      "model.global_batch_size=4"], r"data-parallel size 2 \(trainer.devices x trainer.num_nodes / "),
])
def test_impossible_layouts_raise_value_error_naming_the_keys(overrides, message):
    with pytest.raises(ValueError, match=message):
        compose_gpt([*DATA, *overrides])


def test_t5_stacks_are_checked_for_tensor_parallel_too():
    with pytest.raises(ValueError, match="model.decoder.num_attention_heads=3 is not divisible"):
        compose_t5([*DATA, "trainer.devices=2", "model.tensor_model_parallel_size=2",
                    "model.decoder.num_attention_heads=3", "model.decoder.hidden_size=96",
                    "model.encoder.num_attention_heads=4", "model.encoder.hidden_size=96"])


def test_t5_refuses_context_parallel():
    with pytest.raises(ValueError, match="model.context_parallel_size=2 is not implemented for T5"):
        compose_t5([*DATA, "trainer.devices=2", "model.context_parallel_size=2"])
