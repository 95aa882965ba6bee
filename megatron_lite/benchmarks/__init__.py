"""Measurement code behind scripts/bench_*.py (GPU only)."""
