"""Triton kernels of megatron_lite and their PyTorch references. Depends on torch and triton only."""
