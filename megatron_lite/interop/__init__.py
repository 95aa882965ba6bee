"""Hugging Face interop: our GPT <-> GPT2LMHeadModel and LlamaForCausalLM, our T5 <->
T5ForConditionalGeneration (T5 and T5.1.1 layouts), with safetensors weights and the tokenizer's
files. One module per architecture (config mapping both ways, tensor rules), shared helpers in
architecture.py / mapping.py / files.py / tokenizer.py, whole conversions in convert.py.

Nothing here imports transformers: config.json is read and written as JSON, weights with
safetensors (the `hf` extra) or torch. docs/interop.md lists what maps to what and what is
refused.
"""

from megatron_lite.interop.architecture import HFArchitecture
from megatron_lite.interop.convert import (
    ARCHITECTURES,
    EXPORT_DTYPES,
    architecture_named,
    checkpoint_from_hf,
    convert_hf_to_checkpoint,
    export_checkpoint_to_hf,
)
from megatron_lite.interop.files import is_hf_folder

__all__ = [
    "ARCHITECTURES",
    "EXPORT_DTYPES",
    "HFArchitecture",
    "architecture_named",
    "checkpoint_from_hf",
    "convert_hf_to_checkpoint",
    "export_checkpoint_to_hf",
    "is_hf_folder",
]
