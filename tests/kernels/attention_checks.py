"""The accuracy rule for the attention kernel, shared by the CPU (interpreter) and GPU tests.

Each of out, lse, dq, dk, dv (and the relative bias gradient, or a ParametricBias's params'
gradient) is compared with a float64 reference; the kernel's error may be at most twice the
error of plain PyTorch attention run in the same low precision, plus an absolute tolerance of
the dtype's rounding at the reference's magnitude (the flash-attention rule).
"""

from __future__ import annotations

import math

import torch

from megatron_lite_kernels.attention_reference import attention_reference
from megatron_lite_kernels.flash_attention import ParametricBias, dropout_keep_mask, flash_attn_func


def _attention_with_grads(fn, q, k, v, dout, dlse, bias_dtype, **options):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    relative_bias = options.pop("relative_bias", None)
    if relative_bias is not None:
        relative_bias = relative_bias.detach().to(bias_dtype).requires_grad_()
        options["relative_bias"] = relative_bias
    out, lse = fn(q, k, v, return_lse=True, **options)
    loss = (out.double() * dout.double()).sum()
    if dlse is not None:
        finite = torch.isfinite(lse)
        loss = loss + (torch.where(finite, lse, 0.0).double() * dlse.double()).sum()
    loss.backward()
    results = {"out": out.detach(), "lse": lse.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}
    if relative_bias is not None:
        results["d_relative_bias"] = relative_bias.grad
    return results


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    same_inf = torch.isinf(actual) & torch.isinf(expected) & (actual.sign() == expected.sign())
    diff = torch.where(same_inf, 0.0, (actual - expected).abs())
    return float(diff.nan_to_num(nan=float("inf")).max()) if diff.numel() else 0.0


def check_flash_attention(q, k, v, *, dlse_weight: float = 0.0, dropout_mask=None,
                          error_factor: float = 2.0, **options) -> dict[str, tuple[float, float]]:
    """Run the kernel, PyTorch in the same dtype and a float64 reference; assert the rule.

    `options` go to both implementations (dropout needs `dropout_seed` for the kernel and the
    matching `dropout_mask` for the references). Returns {name: (kernel error, torch error)}.
    """
    generator = torch.Generator(device=q.device).manual_seed(1234)
    dout = torch.randn(q.shape, generator=generator, device=q.device, dtype=q.dtype)
    dlse = None
    if dlse_weight:
        shape = (q.shape[0], q.shape[2], q.shape[1])
        dlse = dlse_weight * torch.randn(shape, generator=generator, device=q.device)

    kernel_options = dict(options)
    reference_options = {key: val for key, val in options.items() if key != "dropout_seed"}
    if dropout_mask is not None:
        reference_options["dropout_mask"] = dropout_mask

    ours = _attention_with_grads(flash_attn_func, q, k, v, dout, dlse, torch.float32,
                                 **kernel_options)
    same_dtype = _attention_with_grads(attention_reference, q, k, v, dout, dlse, torch.float32,
                                       **reference_options)
    exact = _attention_with_grads(attention_reference, q.double(), k.double(), v.double(), dout,
                                  dlse, torch.float64, **reference_options)

    eps = torch.finfo(q.dtype).eps
    report = {}
    for name, expected in exact.items():
        assert ours[name].shape == expected.shape, f"{name}: shape {ours[name].shape} != {expected.shape}"
        assert not torch.isnan(ours[name]).any(), f"{name}: NaN in the kernel's result"
        ours_err = _max_error(ours[name], expected)
        torch_err = _max_error(same_dtype[name], expected)
        finite = expected[torch.isfinite(expected)]
        magnitude = float(finite.abs().max()) if finite.numel() else 0.0
        atol = 2 * eps * max(magnitude, 1.0)
        if name == "d_relative_bias":
            # One entry sums up to B*Sq*Sk fp32 terms, in an order set by the atomics: allow
            # the random-walk rounding of such a sum.
            terms = q.shape[0] * q.shape[1] * k.shape[1]
            atol = max(atol, torch.finfo(torch.float32).eps * terms**0.5 * max(magnitude, 1.0))
        assert ours_err <= error_factor * torch_err + atol, (
            f"{name}: kernel error {ours_err:.3e} > {error_factor} x torch error {torch_err:.3e} "
            f"+ {atol:.1e} (dtype {q.dtype}, q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"options {sorted(options)})")
        report[name] = (ours_err, torch_err)
    return report


def kerple_log(params: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """KERPLE's logarithmic bias [H, N], -b * log(1 + a * |d|^p), of params [3, H] = (a, b, p)."""
    a, b, p = params[:, :, None]  # (H, 1) each
    return -b * torch.log1p(a * distance.abs()[None, :] ** p)


def kerple_parts(heads: int, seqlen_q: int, seqlen_k: int, device: torch.device | str = "cpu"):
    """(params [3, H] away from KERPLE's initial values, distances -W..W in float64 with
    W = max(Sq, Sk) - 1, the jacobian [3, H, 2W + 1] of kerple_log by autograd)."""
    window = max(seqlen_q, seqlen_k) - 1
    distance = torch.arange(-window, window + 1, device=device, dtype=torch.float64)
    params = torch.stack([torch.linspace(0.5, 1.5, heads), torch.linspace(0.1, 0.6, heads),
                          torch.linspace(0.6, 1.4, heads)]).to(device, torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: kerple_log(x, distance), params)
    return params, distance, torch.einsum("hnkh->khn", jacobian)  # (3, H, 2W + 1)


def check_parametric_kerple(q, k, v, *, causal: bool, padded: bool) -> None:
    """KERPLE as a ParametricBias: its params get sum(ds * jacobian) from the dq kernel. Every
    gradient against autograd through the formula in float64, within twice the error of
    PyTorch attention in q's dtype (plus the dtype's rounding); padded: with key padding (the
    second sequence's 9 keys), dropout and an lse gradient as well."""
    batch, seqlen_q, heads, _ = q.shape
    seqlen_k, dtype = k.shape[1], q.dtype
    params, distance, jacobian = kerple_parts(heads, seqlen_q, seqlen_k, q.device)
    options = {"causal": causal}
    if padded:
        options["key_padding_mask"] = torch.tensor([seqlen_k, 9][:batch], device=q.device)
    mask = dropout_keep_mask(batch, heads, seqlen_q, seqlen_k, 0.2, dropout_seed=3,
                             device=q.device)
    generator = torch.Generator(device=q.device).manual_seed(7)
    dout = torch.randn(q.shape, generator=generator, device=q.device).to(dtype)
    dlse = 0.5 * torch.randn(batch, heads, seqlen_q, generator=generator, device=q.device)

    def gradients(attention, inputs, bias_of):
        inputs = [x.detach().requires_grad_() for x in inputs]
        out, lse = attention(*inputs[:3], relative_bias=bias_of(inputs[3]), return_lse=True,
                             **options)
        loss = (out.double() * dout.double()).sum()
        if padded:
            loss = loss + (torch.where(torch.isfinite(lse), lse, 0.0).double() * dlse).sum()
        return torch.autograd.grad(loss, inputs)

    kernel_options = {"dropout_p": 0.2, "dropout_seed": 3} if padded else {}
    reference_options = {"dropout_p": 0.2, "dropout_mask": mask} if padded else {}
    kernel = gradients(
        lambda *x, **o: flash_attn_func(*x, **o, **kernel_options), (q, k, v, params.float()),
        lambda p: ParametricBias(kerple_log(p.detach().double(), distance).float(), p,
                                 jacobian.float()))
    exact = gradients(lambda *x, **o: attention_reference(*x, **o, **reference_options),
                      (q.double(), k.double(), v.double(), params),
                      lambda p: kerple_log(p, distance))
    plain = gradients(lambda *x, **o: attention_reference(*x, **o, **reference_options),
                      (q, k, v, params.float()), lambda p: kerple_log(p, distance.float()))
    for name, ours, torch_error, expected in zip(["dq", "dk", "dv", "dparams"], kernel, plain,
                                                 exact):
        tolerance = torch.finfo(dtype).eps * expected.abs().max().item()
        if name == "dparams":  # a sum of B * Sq * Sk terms per head, in another order
            tolerance *= math.sqrt(batch * seqlen_q * seqlen_k)
        error = (ours.double() - expected).abs().max().item()
        assert error <= 2 * (torch_error.double() - expected).abs().max().item() + tolerance, name
