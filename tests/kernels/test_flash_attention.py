"""The Triton FlashAttention kernel against a float64 reference (interpreter on a CPU, compiled on
a GPU): output, lse and every gradient, over masks, biases, shapes, dtypes and layouts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_lite_kernels.attention_reference import attention_reference
from megatron_lite_kernels.flash_attention import (
    FlashAttentionUnavailable,
    ParametricBias,
    dropout_keep_mask,
    flash_attn_forward_op,
    flash_attn_func,
)
from megatron_lite_kernels.flash_attention import buffers, launch, support
from megatron_lite_kernels.flash_attention.constants import BAND_ROWS, LOG2E
from megatron_lite_kernels.flash_attention.relative_bias import relative_bias_band
from megatron_lite_kernels.flash_attention.relative_bias_grad import walk_range, window_zone
from tests.kernels.attention_checks import (
    check_flash_attention,
    check_parametric_kerple,
    kerple_log,
    kerple_parts,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def randn(*shape, dtype=torch.float32, seed=0):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=DEVICE, dtype=dtype)


def qkv(batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, dtype=torch.float32, seed=0):
    return (randn(batch, seqlen_q, heads_q, head_dim, dtype=dtype, seed=seed),
            randn(batch, seqlen_k, heads_kv, head_dim, dtype=dtype, seed=seed + 1),
            randn(batch, seqlen_k, heads_kv, head_dim, dtype=dtype, seed=seed + 2))


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every buffer the kernels write starts as NaN, so an element they miss fails the test."""
    def poisoned(shape, dtype, device):
        buffer = torch.empty(shape, dtype=dtype, device=device)
        return buffer.fill_(True) if dtype == torch.bool else buffer.fill_(float("nan"))
    monkeypatch.setattr(buffers, "alloc", poisoned)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(1, 1), (17, 17), (100, 100), (129, 129),
                                               (1, 129), (17, 100), (129, 17)])
def test_lengths_off_the_block_grid(poisoned_outputs, seqlen_q, seqlen_k, causal, dtype):
    q, k, v = qkv(1, seqlen_q, seqlen_k, 2, 2, 32, dtype=dtype)
    check_flash_attention(q, k, v, causal=causal)


@pytest.mark.parametrize("head_dim", [16, 24, 64, 80, 128, 256])
def test_head_dims(poisoned_outputs, head_dim):
    q, k, v = qkv(1, 40, 33, 2, 1, head_dim, dtype=torch.float16)
    check_flash_attention(q, k, v, causal=True)


@pytest.mark.parametrize("heads_q,heads_kv", [(4, 2), (6, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_and_multi_query(poisoned_outputs, heads_q, heads_kv, causal):
    q, k, v = qkv(2, 45, 70, heads_q, heads_kv, 32)
    report = check_flash_attention(q, k, v, causal=causal)
    assert report["dk"][0] < 1e-4  # dk/dv summed over the group, not taken from one head


def test_softmax_scale_and_lse_gradient(poisoned_outputs):
    q, k, v = qkv(2, 50, 50, 2, 2, 32)
    check_flash_attention(q, k, v, causal=True, softmax_scale=0.3, dlse_weight=0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_key_padding_with_fully_padded_rows(poisoned_outputs, dtype):
    q, k, v = qkv(3, 33, 40, 2, 2, 32, dtype=dtype)
    real = torch.ones(3, 40, dtype=torch.bool, device=DEVICE)
    real[0, 25:] = False  # right padding
    real[1, ::3] = False  # arbitrary holes
    real[2, :] = False  # a sequence with no real key: its rows must be zeros, never NaN
    check_flash_attention(q, k, v, key_padding_mask=real, dlse_weight=0.5)

    out = flash_attn_func(q, k, v, key_padding_mask=real)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def test_key_lengths_equal_the_boolean_mask():
    q, k, v = qkv(2, 20, 30, 2, 2, 16)
    lengths = torch.tensor([30, 7], device=DEVICE)
    mask = torch.arange(30, device=DEVICE)[None, :] < lengths[:, None]
    check_flash_attention(q, k, v, key_padding_mask=lengths, causal=True)
    assert torch.equal(flash_attn_func(q, k, v, key_padding_mask=lengths),
                       flash_attn_func(q, k, v, key_padding_mask=mask))


def test_causal_rows_before_the_first_key_are_zero(poisoned_outputs):
    # Sq > Sk, bottom-right aligned: the first Sq - Sk query rows see no key at all.
    q, k, v = qkv(1, 50, 20, 2, 2, 32)
    check_flash_attention(q, k, v, causal=True, dlse_weight=0.5)
    out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
    assert torch.equal(out[:, :30], torch.zeros_like(out[:, :30]))
    assert torch.isneginf(lse[:, :, :30]).all() and torch.isfinite(lse[:, :, 30:]).all()


@pytest.mark.parametrize("causal", [False, True])
def test_packed_documents(poisoned_outputs, causal):
    q, k, v = qkv(2, 70, 70, 4, 2, 32)
    segments = torch.tensor([[0] * 10 + [1] * 37 + [2] * 23, [5] * 70], device=DEVICE)
    check_flash_attention(q, k, v, causal=causal, segment_ids=segments)


def test_packed_documents_equal_separate_documents():
    q, k, v = qkv(1, 60, 60, 2, 2, 16)
    bounds = [0, 13, 41, 60]
    segments = torch.repeat_interleave(torch.arange(3), torch.tensor([13, 28, 19]))[None].to(DEVICE)
    packed = flash_attn_func(q, k, v, causal=True, segment_ids=segments)
    for start, end in zip(bounds, bounds[1:]):
        alone = flash_attn_func(q[:, start:end], k[:, start:end], v[:, start:end], causal=True)
        torch.testing.assert_close(packed[:, start:end], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_query_and_key_segment_ids(poisoned_outputs, causal):
    # One part of a packed sequence attending to another (context parallelism's ring steps):
    # queries at positions 40..69 of the sequence against keys at 0..69.
    q, k, v = qkv(2, 30, 70, 4, 2, 32)
    segments = torch.tensor([[0] * 10 + [1] * 37 + [2] * 23, [3] * 50 + [4] * 20], device=DEVICE)
    check_flash_attention(q, k, v, causal=causal, segment_ids=(segments[:, 40:], segments),
                          dlse_weight=0.5)


def test_segment_id_pairs_equal_one_tensor_in_self_attention():
    q, k, v = qkv(1, 45, 45, 2, 2, 16)
    segments = torch.repeat_interleave(torch.arange(3), torch.tensor([13, 20, 12]))[None].to(DEVICE)
    torch.testing.assert_close(flash_attn_func(q, k, v, causal=True, segment_ids=(segments, segments)),
                               flash_attn_func(q, k, v, causal=True, segment_ids=segments))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_batch_slopes", [False, True])
def test_alibi(poisoned_outputs, causal, per_batch_slopes):
    heads = 4
    q, k, v = qkv(2, 37, 52, heads, 2, 32)
    slopes = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)], device=DEVICE)
    if per_batch_slopes:
        slopes = torch.stack([slopes, slopes.flip(0)])
    check_flash_attention(q, k, v, causal=causal, alibi_slopes=slopes)


def t5_style_relative_bias(heads: int, window: int, seed: int = 0) -> torch.Tensor:
    """[H, 2W + 1]: random per-head values, piecewise constant in the distance like buckets."""
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    table = torch.randn(heads, 12, generator=generator, device=DEVICE)
    distance = torch.arange(-window, window + 1, device=DEVICE)
    bucket = (distance.abs().float().add(1).log2().long().clamp(max=5) + 6 * (distance > 0)).long()
    return table[:, bucket]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k,window", [
    *((seqlen_q, seqlen_k, window) for seqlen_q, seqlen_k in [(77, 77), (30, 101), (61, 35)]
      for window in (0, 3, 18)),
    (30, 101, 500)])
def test_relative_position_bias(poisoned_outputs, seqlen_q, seqlen_k, window, causal):
    # window 3: most tiles lie beyond it (the dk/dv kernel's far sums); 500: every tile is
    # inside (the gradient kernel's walks; the slowest under the interpreter, so one shape);
    # 18: some tiles start exactly one step inside the window (with the interpreter's tiles);
    # 0: the causal diagonal's tiles hold distances beyond the window
    q, k, v = qkv(2, seqlen_q, seqlen_k, 4, 2, 32)
    report = check_flash_attention(q, k, v, causal=causal,
                                   relative_bias=t5_style_relative_bias(4, window))
    assert "d_relative_bias" in report


@triton.jit
def _window_zones_kernel(Out, seqlen_q, seqlen_k, rel_window, CAUSAL: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The dk/dv kernel's window zone [lo, hi) of each key block, by the kernel's own code."""
    n = tl.program_id(0)
    zone_lo, zone_hi = window_zone(n * BLOCK_N, seqlen_q, seqlen_k, rel_window, CAUSAL,
                                   BLOCK_M, BLOCK_N)
    tl.store(Out + 2 * n, zone_lo)
    tl.store(Out + 2 * n + 1, zone_hi)


@pytest.mark.parametrize("block_m,block_n", [(16, 32), (64, 64), (64, 128), (32, 128)])
@pytest.mark.parametrize("causal", [False, True])
def test_gradient_walks_cover_every_window_tile(block_m, block_n, causal):
    # The gradient kernel launches only the walks of walk_range: every window tile of the
    # dk/dv kernel must lie on one of them (a missing walk drops gradient silently), and idle
    # walks (programs that find no tile) must be rare.
    for (seqlen_q, seqlen_k), window in itertools.product(
            [(1, 35), (61, 77), (77, 61), (200, 200), (517, 640), (1024, 1024)], [0, 3, 18, 128]):
        blocks = triton.cdiv(seqlen_k, block_n)
        zones = torch.zeros(2 * blocks, dtype=torch.int32, device=DEVICE)
        _window_zones_kernel[(blocks,)](zones, seqlen_q, seqlen_k, window, causal, block_m,
                                        block_n)
        walks = {(start_m - n * block_n) // block_m
                 for n, (lo, hi) in enumerate(zones.view(-1, 2).tolist())
                 for start_m in range(lo, hi, block_m)}
        first, end = walk_range(seqlen_q, seqlen_k, window, causal, block_m, block_n)
        case = (seqlen_q, seqlen_k, window)
        assert first <= min(walks) and max(walks) < end, case
        # Bounded by the sequences too, the range has at most one idle walk (a one-query
        # decode with a narrow window), none at equal lengths, even where the window is wider
        # than the sequences.
        assert end - first <= max(walks) + 2 - min(walks), case
        if seqlen_q == seqlen_k:
            assert (first, end) == (min(walks), max(walks) + 1), case


def test_relative_bias_with_padding_dropout_and_fp16(poisoned_outputs):
    q, k, v = qkv(2, 50, 50, 2, 2, 32, dtype=torch.float16)
    mask = dropout_keep_mask(2, 2, 50, 50, 0.2, dropout_seed=4, device=DEVICE)
    check_flash_attention(q, k, v, relative_bias=t5_style_relative_bias(2, 16),
                          key_padding_mask=torch.tensor([50, 21], device=DEVICE),
                          dropout_p=0.2, dropout_seed=4, dropout_mask=mask)


@pytest.mark.parametrize("causal", [False, True])
def test_relative_bias_gradient_with_lse_gradient_and_blind_rows(poisoned_outputs, causal):
    # The bias's end entry -W is what the others leave of the rows' ds sums, which are the lse
    # gradient, not zero, here; rows that see no key (the first causal rows with Sq > Sk, the
    # second sequence's, all padding) must add none of theirs.
    q, k, v = qkv(2, 61, 35, 2, 2, 32)
    lengths = torch.tensor([35, 0], device=DEVICE)
    check_flash_attention(q, k, v, causal=causal, relative_bias=t5_style_relative_bias(2, 12),
                          key_padding_mask=lengths, dlse_weight=0.5)
    # The check's loss gives blind rows (lse = -inf) no lse gradient; a caller's may.
    bias = t5_style_relative_bias(2, 12).requires_grad_()
    out, lse = flash_attn_func(q, k, v, causal=causal, relative_bias=bias,
                               key_padding_mask=lengths, return_lse=True)
    blind = torch.isneginf(lse)
    dlse = torch.randn_like(lse)
    grads = [torch.autograd.grad((out, lse), bias, (torch.zeros_like(out), lse_grad),
                                 retain_graph=True)[0]
             for lse_grad in (dlse, torch.where(blind, 0.0, dlse))]
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("keys_major", [False, True])
@pytest.mark.parametrize("window,seqlen_q,seqlen_k",
                         [(3, 200, 200), (128, 640, 517), (40, 96, 1000), (299, 300, 300)])
@pytest.mark.parametrize("rows,cols", [(128, 128), (64, 128), (128, 64), (16, 32)])
def test_relative_bias_band_holds_every_tiles_bias(window, seqlen_q, seqlen_k, rows, cols,
                                                   keys_major, causal):
    """The kernels read a tile's bias from the band (band_tile, band_tile_offsets): its row r
    from band row r % R, R * (r // R) columns left of a first column clamped into
    [rows - R, C - cols] and 16-aligned; for every tile of the grid that is log2(e) *
    bias[clamp(j - i')], and -inf where j > i' with a causal mask (the kernels take the mask
    from the band). The forward's and dq's tiles are (queries, keys), the dk/dv kernel's
    (keys, queries)."""
    bias = t5_style_relative_bias(2, window).double()
    band, band_start = relative_bias_band(bias, seqlen_q, seqlen_k, torch.float32, keys_major,
                                          causal)
    band_rows, band_cols = band.shape[1:]
    assert band_start % 16 == 0 and band_cols % 16 == 0 and band_rows == BAND_ROWS.value
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    row_len, col_len = (seqlen_k, seqlen_q) if keys_major else (seqlen_q, seqlen_k)
    for start_r in range(0, row_len, rows):
        for start_c in range(0, col_len, cols):
            col = min(max(start_c - start_r + band_start, rows - band_rows), band_cols - cols)
            read = band[:, r % band_rows, col + c - band_rows * (r // band_rows)]
            queries, keys = (start_c + c, start_r + r) if keys_major else (start_r + r, start_c + c)
            distance = keys - queries - (seqlen_k - seqlen_q)
            expected = bias[:, distance.clamp(-window, window) + window] * LOG2E.value
            if causal:
                expected = expected.masked_fill(distance > 0, float("-inf"))
            torch.testing.assert_close(read, expected.float(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k,padded,dtype", [
    (40, 40, False, torch.float32), (17, 50, True, torch.float32), (50, 23, False, torch.float32),
    (17, 50, True, torch.float16)])
def test_parametric_bias_gives_its_parameters_their_gradient(seqlen_q, seqlen_k, padded, dtype,
                                                             causal):
    check_parametric_kerple(*qkv(2, seqlen_q, seqlen_k, 4, 2, 32, dtype=dtype), causal=causal,
                            padded=padded)


def test_parametric_bias_bad_input_names_the_problem():
    q, k, v = qkv(1, 8, 10, 2, 2, 16)
    params, distance, jacobian = kerple_parts(2, 8, 10, DEVICE)
    values = kerple_log(params, distance).float()
    params, jacobian = params.float().requires_grad_(), jacobian.float()
    cases = [
        (ParametricBias(values[:, 2:-2], params, jacobian[:, :, 2:-2]), "every distance"),
        (ParametricBias(values.clone().requires_grad_(), params, jacobian), "values require grad"),
        (ParametricBias(values, params[:, :1], jacobian), r"params must be \[K, Hq\]"),
        (ParametricBias(values, params, jacobian[:2]), r"jacobian must be \[K, Hq"),
    ]
    for bias, message in cases:
        with pytest.raises(ValueError, match=message):
            flash_attn_func(q, k, v, relative_bias=bias)


def test_dropout_matches_reference_given_the_kernels_mask(poisoned_outputs):
    q, k, v = qkv(2, 33, 47, 4, 2, 32)
    mask = dropout_keep_mask(2, 4, 33, 47, 0.25, dropout_seed=77, device=DEVICE)
    check_flash_attention(q, k, v, causal=True, dropout_p=0.25, dropout_seed=77, dropout_mask=mask)


def test_dropout_keep_rate_and_seeds():
    p = 0.3
    mask = dropout_keep_mask(2, 3, 64, 96, p, dropout_seed=5, device=DEVICE)
    keep = mask.double().mean().item()
    n = mask.numel()
    assert abs(keep - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)  # a 4-sigma binomial band
    # no structure along rows, columns or heads
    assert mask.double().mean(dim=(0, 1, 3)).std() < 0.1
    assert mask.double().mean(dim=(0, 1, 2)).std() < 0.1
    assert not torch.equal(mask[0, 0], mask[0, 1])

    q, k, v = qkv(1, 30, 30, 2, 2, 16)
    first = flash_attn_func(q, k, v, dropout_p=p, dropout_seed=9)
    assert torch.equal(first, flash_attn_func(q, k, v, dropout_p=p, dropout_seed=9))
    assert not torch.equal(first, flash_attn_func(q, k, v, dropout_p=p, dropout_seed=10))
    torch.manual_seed(3)
    drawn = flash_attn_func(q, k, v, dropout_p=p)
    torch.manual_seed(3)
    assert torch.equal(drawn, flash_attn_func(q, k, v, dropout_p=p))


def test_views_of_a_fused_qkv_projection(poisoned_outputs):
    batch, seqlen, heads, head_dim = 2, 41, 4, 32
    fused = randn(batch, seqlen, 3, heads, head_dim)  # one projection's output, q/k/v as views
    q, k, v = fused.unbind(dim=2)
    assert not q.is_contiguous()
    check_flash_attention(q, k, v, causal=True)
    heads_first = randn(batch, heads, seqlen, head_dim).transpose(1, 2)  # [B, S, H, D] view
    check_flash_attention(heads_first, k, v)


def test_views_are_read_in_place(monkeypatch):
    fused = randn(1, 20, 3, 2, 16)
    q, k, v = fused.unbind(dim=2)
    seen = {}
    real_forward = launch.forward

    def spy(q_in, k_in, v_in, *args):
        seen["ptrs"] = (q_in.data_ptr(), k_in.data_ptr(), v_in.data_ptr())
        return real_forward(q_in, k_in, v_in, *args)

    monkeypatch.setattr(launch, "forward", spy)
    flash_attn_func(q, k, v)
    assert seen["ptrs"] == (q.data_ptr(), k.data_ptr(), v.data_ptr())


def test_torch_compile_traces_the_custom_op():
    q, k, v = qkv(1, 24, 24, 2, 1, 16)

    def attention(q, k, v):
        return flash_attn_func(q, k, v, causal=True, dropout_p=0.1, dropout_seed=3)

    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    q.requires_grad_()
    expected = attention(q, k, v)
    torch.testing.assert_close(compiled(q, k, v), expected, rtol=0, atol=0)
    (grad_q,) = torch.autograd.grad(compiled(q, k, v).sum(), q)
    torch.testing.assert_close(grad_q, torch.autograd.grad(expected.sum(), q)[0], rtol=0, atol=0)
    # A seed drawn per call (the models' case) is drawn on the device: no graph break either.
    drawing = torch.compile(lambda q, k, v: flash_attn_func(q, k, v, dropout_p=0.1),
                            backend="aot_eager", fullgraph=True)
    torch.manual_seed(8)
    drawn = drawing(q, k, v)
    torch.manual_seed(8)
    torch.testing.assert_close(drawn, flash_attn_func(q, k, v, dropout_p=0.1), rtol=0, atol=0)
    # A ParametricBias (KERPLE under torch_compile): its params' gradient through the graph.
    params, distance, jacobian = kerple_parts(2, 24, 24, DEVICE)
    values, jacobian = kerple_log(params, distance).float(), jacobian.float()
    params = params.float().requires_grad_()

    def biased(q, k, v, params):
        return flash_attn_func(q, k, v, causal=True,
                               relative_bias=ParametricBias(values, params, jacobian))

    compiled = torch.compile(biased, backend="aot_eager", fullgraph=True)
    expected = torch.autograd.grad(biased(q, k, v, params).sum(), (q, params))
    for got, want in zip(torch.autograd.grad(compiled(q, k, v, params).sum(), (q, params)),
                         expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    batch=st.integers(1, 2), seqlen_q=st.integers(1, 70), seqlen_k=st.integers(1, 70),
    heads_kv=st.integers(1, 2), group=st.sampled_from([1, 3]),
    head_dim=st.sampled_from([16, 24, 40, 64]), causal=st.booleans(), alibi=st.booleans(),
    padded=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float16]),
)
def test_property_any_shape_and_options(batch, seqlen_q, seqlen_k, heads_kv, group, head_dim,
                                        causal, alibi, padded, dtype):
    heads_q = heads_kv * group
    q, k, v = qkv(batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim, dtype=dtype)
    options = {"causal": causal}
    if alibi:
        options["alibi_slopes"] = torch.linspace(0.05, 1.0, heads_q, device=DEVICE)
    if padded:
        options["key_padding_mask"] = torch.randint(0, seqlen_k + 1, (batch,), device=DEVICE)
    check_flash_attention(q, k, v, **options)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def _bad_input_cases():
    q, k, v = qkv(2, 8, 10, 4, 2, 16)
    return [
        ("3-D q", (q[0], k, v), {}, "q must be a 4-D tensor"),
        ("dtype mix", (q, k.half(), v), {}, "share one dtype"),
        ("int dtype", (q.long(), k.long(), v.long()), {}, "not supported"),
        ("k/v shapes", (q, k, v[:, :5]), {}, "same shape"),
        ("head dim", (q, k[..., :8], v[..., :8]), {}, "head dim"),
        ("batch", (q, k[:1], v[:1]), {}, "batch size"),
        ("groups", (randn(2, 8, 3, 16), k, v), {}, "multiple of the key/value heads"),
        ("head dim range", qkv(1, 4, 4, 1, 1, 264), {}, "out of range"),
        ("slopes", (q, k, v), {"alibi_slopes": torch.ones(3, device=DEVICE)}, "alibi_slopes must"),
        ("mask shape", (q, k, v), {"key_padding_mask": torch.ones(2, 9, dtype=torch.bool,
                                                                   device=DEVICE)}, "key_padding_mask"),
        ("segments", (q, k, v), {"segment_ids": torch.zeros(2, 8, dtype=torch.long,
                                                            device=DEVICE)}, "segment_ids"),
        ("dropout", (q, k, v), {"dropout_p": 1.0}, "dropout_p"),
        ("relative bias", (q, k, v), {"relative_bias": torch.zeros(4, 8, device=DEVICE)},
         "relative_bias must"),
    ]


@pytest.mark.parametrize("case", _bad_input_cases(), ids=lambda case: case[0])
def test_bad_input_names_the_problem(case):
    _, args, options, message = case
    with pytest.raises(ValueError, match=message):
        flash_attn_func(*args, **options)


def test_learned_alibi_slopes_are_refused():
    q, k, v = qkv(1, 4, 4, 2, 2, 16)
    with pytest.raises(ValueError, match="requires grad"):
        flash_attn_func(q, k, v, alibi_slopes=torch.ones(2, device=DEVICE, requires_grad=True))


def test_mixed_devices_are_refused():
    q, k, v = qkv(1, 4, 4, 2, 2, 16)
    with pytest.raises(ValueError, match="one device"):
        flash_attn_func(q, k.to("meta"), v)


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(support, "INTERPRETER", False)
    q, k, v = (torch.randn(1, 4, 2, 16) for _ in range(3))
    with pytest.raises(FlashAttentionUnavailable, match="TRITON_INTERPRET=1"):
        flash_attn_func(q, k, v)


def test_reference_is_the_textbook_formula():
    # The reference itself, once, against causal ALiBi attention written out by hand.
    q, k, v = (x.double() for x in qkv(1, 3, 4, 1, 1, 8))
    rows = torch.arange(3, device=DEVICE)[:, None] + 1  # bottom-right aligned query positions
    cols = torch.arange(4, device=DEVICE)[None, :]
    scores = (q[0, :, 0] @ k[0, :, 0].T) / math.sqrt(8) - 0.5 * (rows - cols).abs()
    scores = scores.masked_fill(cols > rows, float("-inf"))
    expected = torch.softmax(scores, dim=-1) @ v[0, :, 0]
    got = attention_reference(q, k, v, causal=True, alibi_slopes=torch.tensor([0.5], device=DEVICE))
    torch.testing.assert_close(got[0, :, 0], expected)


def test_custom_op_registration_passes_opcheck():
    q, k, v = qkv(1, 20, 24, 2, 1, 16)
    q.requires_grad_()
    lengths = torch.tensor([20], device=DEVICE)
    key_mask = (torch.arange(24, device=DEVICE)[None] < lengths[:, None]).view(torch.uint8)
    relative_bias = torch.randn(2, 9, device=DEVICE, requires_grad=True)
    torch.library.opcheck(flash_attn_forward_op, (q, k, v, None, relative_bias, None, None,
                                                  key_mask, None, True, 0.25, 0.0, None))
    seed = torch.tensor([5], device=DEVICE)
    torch.library.opcheck(flash_attn_forward_op, (q, k, v, None, None, None, None, None, None,
                                                  False, 0.25, 0.2, seed))
    # a ParametricBias: values, params [K, Hq] and jacobian [K, Hq, 2W + 1], W = 23
    params, distance, jacobian = kerple_parts(2, 20, 24, DEVICE)
    torch.library.opcheck(flash_attn_forward_op, (
        q, k, v, None, kerple_log(params, distance).float(), params.float().requires_grad_(),
        jacobian.float(), None, None, True, 0.25, 0.0, None))


def test_broadcast_lse_gradient():
    # lse.sum() hands the backward an expanded (stride 0) gradient for lse.
    q, k, v = (x.requires_grad_() for x in qkv(1, 30, 30, 2, 2, 16))
    _, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
    grads = torch.autograd.grad(lse.sum(), (q, k, v))
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    _, lse64 = attention_reference(q64, k64, v64, causal=True, return_lse=True)
    expected = torch.autograd.grad(lse64.sum(), (q64, k64))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    assert torch.equal(grads[2], torch.zeros_like(v))  # lse does not depend on v
