"""Our kernel package and Hugging Face's `kernels` distribution live side by side in one process.

transformers >= 5.25 imports Hugging Face's `kernels`; a package of ours importable as `kernels`
(a `kernels/__init__.py` at the repository root, which pytest and `python -c` put on sys.path)
shadows it and breaks `from transformers import ...`. These tests import and run both, and fail if
the name is taken again.
"""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _distribution_files(name: str) -> set[Path]:
    dist = importlib.metadata.distribution(name)
    return {Path(dist.locate_file(file)).resolve() for file in dist.files or ()}


def test_repository_has_no_top_level_kernels_package():
    assert not (REPO / "kernels" / "__init__.py").exists(), (
        "kernels/__init__.py makes the repository's kernels/ folder the package `kernels`, which "
        "shadows Hugging Face's distribution of that name (transformers imports it); our kernel "
        "package is megatron_lite_kernels, under kernels/"
    )


def test_kernel_package_and_transformers_run_in_one_process():
    from megatron_lite_kernels.attention_reference import attention_reference
    from megatron_lite_kernels.flash_attention import flash_attn_func

    import kernels
    import transformers  # the test extra installs it: no skip, this test exists to run it

    # `kernels` is Hugging Face's: its module file is one of the installed distribution's files.
    assert Path(kernels.__file__).resolve() in _distribution_files("kernels"), kernels.__file__
    assert Path(kernels.__file__).resolve().parent != REPO / "kernels"

    # Our Triton kernel (the interpreter without a GPU: fp32, tiny shapes), against its reference.
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 5, 2, 16, generator=generator) for _ in range(3))  # (B, S, H, D)
    out = flash_attn_func(q, k, v, causal=True)
    expected = attention_reference(q.double(), k.double(), v.double(), causal=True)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)

    # A tiny GPT-2 from a config (no download): causal, and its loss is its logits' cross-entropy.
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (2, 8), generator=generator)
    changed_last = ids.clone()
    changed_last[:, -1] = (ids[:, -1] + 1) % 50
    with torch.no_grad():
        result = model(ids, labels=ids)
        logits_changed = model(changed_last).logits
    assert result.logits.shape == (2, 8, 50)
    torch.testing.assert_close(logits_changed[:, :-1], result.logits[:, :-1])
    loss = torch.nn.functional.cross_entropy(result.logits[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(result.loss, loss)


def test_fresh_interpreter_in_repository_root_imports_both():
    """`python -c` in the repository root puts the root first on sys.path, before site-packages:
    the exact place where a kernels/__init__.py would win. Import order: ours, then transformers."""
    code = (
        "import megatron_lite_kernels.flash_attention\n"
        "from transformers import GPT2LMHeadModel\n"
        "import kernels\n"
        "print(kernels.__file__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip().splitlines()[-1]).resolve() in _distribution_files("kernels")


def test_missing_transformers_names_the_extra(monkeypatch):
    from megatron_lite.extras import import_transformers

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[hf\]'"):
        import_transformers()
