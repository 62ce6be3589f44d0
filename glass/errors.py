"""The project's own error types: failures whose message already tells the user what to do.

A stage entry point prints these as one line and exits with status 2
(``glass.stage_runner.run_stage``); every other exception keeps its traceback, because it means a
bug rather than a wrong input. Each type also derives from the builtin error it refines, so that
callers catching ``ValueError`` or ``FileNotFoundError`` keep working.
"""

from __future__ import annotations


class GlassError(Exception):
    """Base of every error whose message names the file, sample or key and the fix."""


class InvalidInput(GlassError, ValueError):
    """Input data (a file, a record, a sample) or a setting is not what the stage can use."""


class MissingInput(GlassError, FileNotFoundError):
    """A file, folder or model the stage needs is not there; the message says how to get it."""


class StageFailed(GlassError, RuntimeError):
    """The work itself failed in a way the message explains (out of memory, a worker that keeps
    dying, a non-finite loss)."""
