"""scripts/convert_checkpoint.py: both directions through the command line, and a refusal as one
`Error:` line with exit status 1."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.gpt_testing import REPO
from tests.interop.hf_models import hf_logits, tiny_gpt2, transformers


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("convert_checkpoint",
                                                  REPO / "scripts" / "convert_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_from_hf_then_to_hf(script, tmp_path, capsys):
    hf = tiny_gpt2()
    hf.save_pretrained(tmp_path / "hf")
    script.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "gpt.ckpt"), "--family", "gpt2"])
    script.main(["--to-hf", str(tmp_path / "gpt.ckpt"), str(tmp_path / "back"), "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'gpt.ckpt'}" in out and f"wrote {tmp_path / 'back'}" in out
    assert "Note: the checkpoint names no tokenizer" in out
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert back.dtype == torch.bfloat16
    torch.testing.assert_close(hf_logits(back.float(), "gpt"), hf_logits(hf, "gpt"), rtol=0.02, atol=0.02)


def test_a_refusal_is_one_error_line(script, tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "hf")
    script.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "gpt.ckpt")])
    with pytest.raises(SystemExit, match=r"^Error: cannot write a LlamaForCausalLM: it has no equivalent of\n"
                                         r"  model.position_embedding_type='learned_absolute'"):
        script.main(["--to-hf", str(tmp_path / "gpt.ckpt"), str(tmp_path / "out"), "--family", "llama"])
    assert not (tmp_path / "out").exists()
