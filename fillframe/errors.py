"""Errors that end a job, each with a stable code for the job's `errorCode`.

Imaging and engines raise these; the worker turns them into a FAILED (or CANCELLED) job.
Anything else an engine raises is reported as `engine_error` without its traceback.
"""

from __future__ import annotations


class FillError(Exception):
    """A job failure a person can act on: `code` is stable, `message` is one sentence."""

    code = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(FillError):
    """The image or mask could not be fetched or decoded, or their sizes differ."""

    code = "invalid_input"


class EngineFailed(FillError):
    code = "engine_error"


class RequestModerated(FillError):
    code = "request_moderated"


class ContentModerated(FillError):
    code = "content_moderated"


class TimedOut(FillError):
    code = "timeout"


class Cancelled(FillError):
    """Raised by an engine when its `cancelled()` callback turns true."""

    code = "cancelled"

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)
