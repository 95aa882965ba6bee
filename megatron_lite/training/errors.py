"""The errors training reports to the user as one message (scripts/train.py prints them without a
traceback), and that message."""

from __future__ import annotations

from omegaconf.errors import MissingMandatoryValue


class NonFiniteError(RuntimeError):
    """The loss or the gradients of a step are not finite and model.non_finite_action=stop."""


# What a user can fix from the message alone: bad config values, missing or damaged files, a
# diverged run.
USER_ERRORS = (ValueError, FileNotFoundError, MissingMandatoryValue, NonFiniteError)

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def user_message(error: BaseException) -> str:
    """The error's message; for one raised in a DataLoader worker (which torch re-raises in the
    main process with the worker's traceback in its text), only the original message."""
    text = str(error)
    if _WORKER_TRACEBACK in text:
        last_line = text.rstrip().splitlines()[-1]
        return last_line.partition(": ")[2] or last_line
    return text
