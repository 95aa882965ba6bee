"""Value checks shared by the config sections' __post_init__."""

from __future__ import annotations


def require_at_least(section: object, prefix: str, minimum: int, *keys: str) -> None:
    """ValueError naming the first of `keys` whose value in `section` is below `minimum`
    (an optional key left at None is not checked)."""
    for key in keys:
        value = getattr(section, key)
        if value is not None and value < minimum:
            raise ValueError(f"{prefix}{key} must be >= {minimum}, got {value}")
