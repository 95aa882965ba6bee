"""Tensor parallelism (and sequence parallelism) over 2 CPU processes (gloo): a model sharded
by apply_tensor_parallel gives the losses and gradients of the same model whole, step after
step of AdamW from the same initial weights, for GPT and T5 and every position type; the flash
path under the Triton interpreter once; the size checks name their keys."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from megatron_lite.config import GPTModelConfig
from megatron_lite.models import GPTModel, T5Model
from megatron_lite.modules import cross_entropy
from megatron_lite.modules.cross_entropy import linear_cross_entropy
from megatron_lite.modules.lora import add_lora
from megatron_lite.parallel.tensor_parallel import apply_tensor_parallel, check_tensor_parallel_sizes
from tests.parallel.distributed_testing import spawn_ranks
from tests.t5_testing import tiny_t5_config

WORLD = 2
VOCAB = 128
STEPS = 3


def gpt_config(**changes) -> GPTModelConfig:
    values = dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                  encoder_seq_length=16, max_position_embeddings=16, hidden_dropout=0.0,
                  attention_dropout=0.0, ffn_dropout=0.0, use_flash_attention=False)
    values.update(changes)
    return GPTModelConfig(**values)


def t5_config(stack: dict | None = None, **changes):
    stack = {"hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
             "use_flash_attention": False, **(stack or {})}
    return tiny_t5_config(seq_length=16, seq_length_dec=8, stack=stack, **changes)


# name: (model type, config). GQA, gated MLPs, biases, post-LN, selective checkpointing, untied
# output layers and every position type are spread over the cases.
CASES = {
    "gpt-learned": (GPTModel, gpt_config(position_embedding_type="learned_absolute", bias=True)),
    "gpt-rope-gqa-swiglu": (GPTModel, gpt_config(
        position_embedding_type="rope", num_query_groups=2, activation="swiglu",
        share_embeddings_and_output_weights=False)),
    "gpt-alibi-post-ln": (GPTModel, gpt_config(position_embedding_type="alibi",
                                               transformer_block_type="post_ln")),
    "gpt-kerple-selective": (GPTModel, gpt_config(position_embedding_type="kerple", num_query_groups=2,
                                                  activations_checkpoint_granularity="selective")),
    "gpt-kerple-power": (GPTModel, gpt_config(position_embedding_type="kerple_power")),
    "gpt-sandwich-geglu": (GPTModel, gpt_config(position_embedding_type="sandwich", activation="geglu")),
    "gpt-xpos": (GPTModel, gpt_config(position_embedding_type="xpos")),
    "t5-relative-geglu-gqa": (T5Model, t5_config({"activation": "geglu", "num_query_groups": 2})),
    "t5-relative-gqa-1-layer": (T5Model, t5_config({"num_layers": 1, "num_query_groups": 2})),
    "t5-learned-alibi-untied": (T5Model, t5_config(
        encoder={"position_embedding_type": "learned_absolute"},
        decoder={"position_embedding_type": "alibi", "bias": True},
        share_token_embeddings=False, share_decoder_tokens_head_embeddings=False, tokens_head_bias=False)),
}


def batch(model_type: type, step: int) -> dict[str, torch.Tensor]:
    """The step's micro-batch, the same on every rank: padding, packed documents, masked labels."""
    generator = torch.Generator().manual_seed(100 + step)
    if model_type is GPTModel:
        tokens = torch.randint(0, VOCAB, (2, 16), generator=generator)
        segment_ids = torch.tensor([[0] * 9 + [1] * 7, [0] * 16], dtype=torch.int32)  # two documents
        position_ids = torch.stack([torch.cat([torch.arange(9), torch.arange(7)]), torch.arange(16)])
        return {"tokens": tokens, "position_ids": position_ids, "segment_ids": segment_ids,
                "labels": torch.randint(0, VOCAB, (2, 16), generator=generator),
                "loss_mask": (torch.rand(2, 16, generator=generator) > 0.2).float()}
    enc_mask = torch.ones(2, 16, dtype=torch.bool)
    enc_mask[1, 11:] = False
    return {"text_enc": torch.randint(0, VOCAB, (2, 16), generator=generator),
            "text_dec": torch.randint(0, VOCAB, (2, 8), generator=generator), "enc_mask": enc_mask,
            "labels": torch.randint(0, VOCAB, (2, 8), generator=generator),
            "loss_mask": (torch.rand(2, 8, generator=generator) > 0.2).float()}


def loss_of(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The families' training losses (training/gpt.py, training/t5.py) without a RunConfig."""
    if isinstance(model, GPTModel):
        hidden = model.hidden_states(data["tokens"], data["position_ids"], data["segment_ids"])
        return linear_cross_entropy(hidden, model.output_weight(), data["labels"], data["loss_mask"])
    context = model.encode(data["text_enc"], data["enc_mask"])
    hidden = model.decoder_hidden_states(data["text_dec"], context, data["enc_mask"])
    return linear_cross_entropy(hidden, model.output_weight(), data["labels"], data["loss_mask"],
                                bias=model.output_bias)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def train_side_by_side(model_type: type, cfg, mesh, *, sequence_parallel: bool, steps: int,
                       dtype: torch.dtype) -> list[float]:
    """`steps` AdamW steps of the model whole and sharded, from the same weights: the losses,
    every gradient and the updated weights agree at every step. Returns the sharded losses.
    In float64 the two differ by rounding only (sums in other orders), which Adam's
    normalisation would otherwise blow up in the gradients that are near zero."""
    torch.manual_seed(0)
    reference = model_type(cfg, VOCAB).to(dtype)
    sharded = model_type(cfg, VOCAB).to(dtype)
    sharded.load_state_dict(reference.state_dict())
    apply_tensor_parallel(sharded, mesh, sequence_parallel=sequence_parallel)
    assert any(isinstance(p, DTensor) for p in sharded.parameters())
    optimizers = [torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
                  for model in (reference, sharded)]
    close = dict(rtol=1e-8, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    losses = []
    for step in range(steps):
        data = batch(model_type, step)
        for model, optimizer in zip((reference, sharded), optimizers):
            optimizer.zero_grad()
            with logit_widths() as widths:
                loss = loss_of(model, data)
            # Sharded, each rank's logits cover its share of the vocabulary only.
            assert set(widths) == {VOCAB // WORLD if model is sharded else VOCAB}, widths
            loss.backward()
            losses.append(loss.detach())
        want, got = losses[-2:]
        torch.testing.assert_close(got, want, **close, msg=lambda m: f"loss at step {step}: {m}")
        parameters = dict(sharded.named_parameters())
        for name, param in reference.named_parameters():
            torch.testing.assert_close(whole(parameters[name].grad), param.grad, **close,
                                       msg=lambda m: f"gradient of {name} at step {step}: {m}")
        for optimizer in optimizers:
            optimizer.step()
    if dtype == torch.float64:  # in float32, Adam turns rounding noise into lr-sized steps
        for name, param in sharded.named_parameters():
            torch.testing.assert_close(whole(param.detach()), reference.get_parameter(name).detach(),
                                       **close, msg=lambda m: f"{name} after {steps} steps: {m}")
        # forward's logits (evaluation, generation): a DTensor sharded by vocabulary.
        keys = ("tokens",) if model_type is GPTModel else ("text_enc", "text_dec", "enc_mask")
        with torch.no_grad():
            logits = sharded(*(data[key] for key in keys))
            assert logits.placements == (Shard(2),)
            torch.testing.assert_close(logits.full_tensor(), reference(*(data[key] for key in keys)), **close)
    return [float(loss) for loss in losses[1::2]]


@contextlib.contextmanager
def logit_widths():
    """The vocabulary width of every chunk of logits the loss makes inside the block."""
    widths, real = [], cross_entropy._log_softmax_terms

    def spy(logits, *args):
        widths.append(logits.shape[1])
        return real(logits, *args)

    cross_entropy._log_softmax_terms = spy
    try:
        yield widths
    finally:
        cross_entropy._log_softmax_terms = real


def run_rank(rank: int, world: int, names: list[str], use_flash: bool, layouts: tuple[bool, ...],
             steps: int) -> None:
    """Each case against one process under each of `layouts` (sequence parallel or not)."""
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tensor_parallel",))
    for name in names:
        model_type, cfg = CASES[name]
        # The kernel takes float32 (and half types), not float64.
        dtype = torch.float32 if use_flash else torch.float64
        if use_flash:
            cfg = flash_on(cfg)
        by_layout = [train_side_by_side(model_type, cfg, mesh, sequence_parallel=sp, steps=steps,
                                        dtype=dtype) for sp in layouts]
        # Sequence parallelism changes where norms run and how sums are reduced, not the math.
        assert by_layout[-1] == pytest.approx(by_layout[0], rel=1e-6), name
    if not use_flash:
        check_refusals(mesh)


def check_refusals(mesh) -> None:
    """A sequence that does not split into equal shards, and LoRA adapters, are refused."""
    model = GPTModel(gpt_config(), VOCAB)
    apply_tensor_parallel(model, mesh, sequence_parallel=True)
    with pytest.raises(ValueError, match="sequence of 15 tokens does not split"):
        model(torch.zeros(2, 15, dtype=torch.long))
    adapted = GPTModel(gpt_config(), VOCAB)
    add_lora(adapted, rank=2, alpha=2.0)
    with pytest.raises(ValueError, match="LoRA adapters"):
        apply_tensor_parallel(adapted, mesh, sequence_parallel=False)


def flash_on(cfg):
    if isinstance(cfg, GPTModelConfig):
        return dataclasses.replace(cfg, use_flash_attention=True)
    return dataclasses.replace(cfg, **{side: dataclasses.replace(getattr(cfg, side), use_flash_attention=True)
                                       for side in ("encoder", "decoder")})


@pytest.mark.distributed
def test_tensor_and_sequence_parallel_equal_one_process():
    """Every case, with and without sequence parallelism, against one process: 3 steps each."""
    spawn_ranks(run_rank, WORLD, list(CASES), False, (False, True), STEPS)


@pytest.mark.distributed
def test_tensor_parallel_through_the_flash_kernel():
    """The kernel on each rank's heads (interpreter, float32): one step of a 1+1-layer T5 with GQA, sequence
    parallel; the relative bias reaches the kernel as each rank's heads' rows, and the kernel's
    gradient of them lands in that rank's shard of the table. And a GPT with KERPLE, which goes
    as a ParametricBias of the rank's heads: the dq kernel's parameter gradient lands in the
    rank's shard of each parameter."""
    from tests.modules.test_attention import needs_kernel_on_cpu  # noqa: PLC0415

    needs_kernel_on_cpu()
    spawn_ranks(run_rank, WORLD, ["t5-relative-gqa-1-layer", "gpt-kerple-power"], True, (True,), 1)


def test_sizes_the_ranks_cannot_share_are_refused_naming_their_keys():
    check_tensor_parallel_sizes(GPTModel(gpt_config(num_query_groups=2), VOCAB), 2)  # fits
    cases = [
        (GPTModel(gpt_config(num_attention_heads=8, hidden_size=64), VOCAB), 3,
         ["model.num_attention_heads=8", "model.ffn_hidden_size=128"]),
        (GPTModel(gpt_config(num_query_groups=2), VOCAB), 4,
         ["model.num_query_groups=2 is not divisible", "whole query groups"]),
        (GPTModel(gpt_config(), 130), 4, ["padded_vocab_size=130", "model.make_vocab_size_divisible_by"]),
        (T5Model(t5_config(decoder={"num_attention_heads": 2, "kv_channels": 16}), VOCAB), 4,
         ["model.decoder.num_attention_heads=2"]),
    ]
    for model, tp, phrases in cases:
        with pytest.raises(ValueError) as error:
            check_tensor_parallel_sizes(model, tp)
        message = str(error.value)
        assert "model.tensor_model_parallel_size" in message
        for phrase in phrases:
            assert phrase in message, (phrase, message)
    assert "model.encoder." not in message  # the encoder's 4 heads divide
