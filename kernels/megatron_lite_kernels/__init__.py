"""megatron_lite's Triton kernels and their PyTorch references. Depends on torch and triton only.

- flash_attention: FlashAttention-2 (forward and backward) with masks, ALiBi, a learned
  relative position bias and dropout inside the kernel.
- attention_reference: plain PyTorch attention with exactly the same semantics.
- sm90_compile, module_copy: tools for changing a kernel (compile for an H100/H200 without a
  GPU; load an edited copy beside the installed package).
"""
