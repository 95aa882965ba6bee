"""The kernel compiled on a GPU, bf16 and fp16 at real sizes, against a float64 reference with
the same rule as the CPU tests. Run with `pytest -m gpu tests/kernels`."""

from __future__ import annotations

import pytest
import torch

from megatron_lite_kernels.flash_attention import dropout_keep_mask
from tests.kernels.attention_checks import check_flash_attention, check_parametric_kerple

pytestmark = pytest.mark.gpu


def qkv(batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, dtype, seed=0):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    shapes = [(batch, seqlen_q, heads_q, head_dim)] + [(batch, seqlen_k, heads_kv, head_dim)] * 2
    return [torch.randn(s, generator=generator, device="cuda", dtype=dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen", [1024, 4096, 16384])
def test_real_sizes(seqlen, causal, head_dim, dtype):
    batch, heads = (2, 2) if seqlen <= 4096 else (1, 2)
    check_flash_attention(*qkv(batch, seqlen, seqlen, heads, heads, head_dim, dtype), causal=causal)


@pytest.mark.parametrize("head_dim", [32, 80, 96, 256])
def test_other_head_dims(head_dim):
    check_flash_attention(*qkv(2, 1000, 1000, 4, 2, head_dim, torch.bfloat16), causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_and_decode(causal):
    check_flash_attention(*qkv(2, 777, 3001, 8, 2, 128, torch.bfloat16), causal=causal)
    check_flash_attention(*qkv(4, 1, 4097, 8, 1, 128, torch.bfloat16), causal=causal)


@pytest.mark.parametrize("causal", [False, True])
def test_alibi(causal):
    heads = 8
    slopes = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)], device="cuda")
    check_flash_attention(*qkv(2, 2048, 2048, heads, 4, 128, torch.bfloat16), causal=causal,
                          alibi_slopes=slopes)


def test_padding_and_documents():
    q, k, v = qkv(3, 2048, 2048, 4, 4, 128, torch.bfloat16)
    lengths = torch.tensor([2048, 1000, 0], device="cuda")
    check_flash_attention(q, k, v, key_padding_mask=lengths, causal=True)
    segments = torch.repeat_interleave(torch.arange(4, device="cuda"),
                                       torch.tensor([100, 900, 1000, 48], device="cuda"))
    check_flash_attention(q, k, v, segment_ids=segments.expand(3, -1), causal=True)
    # Query and key ids apart: the last 512 queries against every key (a context-parallel step).
    ids = segments.expand(3, -1)
    check_flash_attention(q[:, -512:], k, v, segment_ids=(ids[:, -512:], ids), causal=True)


def test_dropout():
    q, k, v = qkv(2, 1024, 1024, 4, 2, 64, torch.bfloat16)
    mask = dropout_keep_mask(2, 4, 1024, 1024, 0.1, dropout_seed=11, device="cuda")
    assert abs(mask.float().mean().item() - 0.9) < 1e-3
    check_flash_attention(q, k, v, causal=True, dropout_p=0.1, dropout_seed=11, dropout_mask=mask)


@pytest.mark.parametrize("causal", [False, True])
def test_relative_position_bias(causal):
    # T5's defaults: 32 buckets up to distance 128, one table per query head.
    heads, window = 8, 128
    table = torch.randn(heads, 2 * window + 1, device="cuda")
    check_flash_attention(*qkv(2, 2048, 2048, heads, heads, 64, torch.bfloat16), causal=causal,
                          relative_bias=table)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim,dtype", [(128, torch.float16), (256, torch.bfloat16)])
def test_relative_position_bias_with_padding_dropout_and_unequal_lengths(head_dim, dtype, causal):
    # Sq != Sk shifts every distance; D = 256 runs the dk/dv tiles left after pruning the ones
    # the bias gradient cannot take (BLOCK_M > BLOCK_N), and causal the gradient kernel's own
    # tiles; the lse gradient enters the bias's end entry (rows of ds sum to it).
    heads, window = 4, 128
    q, k, v = qkv(2, 700, 1500, heads, heads, head_dim, dtype)
    mask = dropout_keep_mask(2, heads, 700, 1500, 0.1, dropout_seed=5, device="cuda")
    check_flash_attention(q, k, v, relative_bias=torch.randn(heads, 2 * window + 1, device="cuda"),
                          key_padding_mask=torch.tensor([1500, 901], device="cuda"),
                          dropout_p=0.1, dropout_seed=5, dropout_mask=mask, causal=causal,
                          dlse_weight=0.5)


@pytest.mark.parametrize("kind", ["kerple", "sandwich"])
@pytest.mark.parametrize("causal", [False, True])
def test_biases_over_every_distance(kind, causal):
    # KERPLE and Sandwich reach the kernel as their values at every distance of the call
    # (W = N - 1): every tile reads the band, and KERPLE's gradient walks every tile.
    from megatron_lite.modules import KerpleBias, SandwichBias

    heads, seqlen = 8, 4096
    module = KerpleBias(heads, "log") if kind == "kerple" else SandwichBias(heads, 64)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(0.5, 1.5)
    by_distance = module.cuda().attention_inputs(seqlen, seqlen)["relative_bias"].detach()
    check_flash_attention(*qkv(1, seqlen, seqlen, heads, heads, 64, torch.bfloat16),
                          causal=causal, relative_bias=by_distance)


@pytest.mark.parametrize("causal", [False, True])
def test_parametric_kerple(causal):
    # KERPLE as the models hand it to the kernel: the params' gradient reduced per head in the
    # dq kernel from the jacobian's bands (fp16 for bf16 inputs), with padding and dropout.
    check_parametric_kerple(*qkv(2, 2048, 2048, 8, 4, 64, torch.bfloat16), causal=causal,
                            padded=True)
