"""Errors a user can act on.

Every error the core raises on bad input or missing files is a ``PortraitTalkError``: its message
names the problem and the fix in one line, so the command line prints it without a traceback and
the ComfyUI nodes show it as it is.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator


class PortraitTalkError(Exception):
    """A problem the user can fix. ``str(err)`` is '<problem>. Fix: <fix>'."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(". ")
        self.fix = fix
        super().__init__(f"{self.problem}. Fix: {fix}" if fix else self.problem)


class InputError(PortraitTalkError):
    """An input image, audio file or argument cannot be used."""


class FaceError(InputError):
    """No usable face in a reference image."""


class AudioError(InputError):
    """The audio cannot be read or is unusable (silent, too short, corrupt)."""


class WeightsError(PortraitTalkError):
    """Model weights are missing, unreadable or do not match the model."""


class Cancelled(PortraitTalkError):
    """The user stopped a generation; no partial output file is left behind."""


class PortraitTalkWarning(UserWarning):
    """Something the user should know about an input that still works (a second face, a photo far from what the
    model knows). The command line prints it as one ``warning: ...`` line; the nodes log it."""


@contextmanager
def warnings_logged(logger: logging.Logger) -> Iterator[None]:
    """Inside, each PortraitTalkWarning becomes one line in ``logger`` (a host's log: ComfyUI's console) rather
    than Python's default two lines with our source code in them."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PortraitTalkWarning)
            yield
    finally:  # outside catch_warnings: a warning handed on must not land in the list being read
        for warning in caught:
            if issubclass(warning.category, PortraitTalkWarning):
                logger.warning("PortraitTalk: %s", warning.message)
            else:  # not ours: handed on as it came
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
