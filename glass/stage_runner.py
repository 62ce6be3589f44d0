"""What every stage entry point shares: logging setup and turning user errors into clean exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

# Errors that mean "the inputs or settings are wrong", whose message already says what to do.
USER_ERRORS = (FileNotFoundError, ValueError, KeyError, RuntimeError)


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("GLASS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # accelerate logs every file of every checkpoint at INFO; keep its warnings only
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run ``main``; a user error prints one clear line (traceback with GLASS_DEBUG=1), exit 2."""
    setup_logging()
    try:
        main()
    except USER_ERRORS as error:
        if os.environ.get("GLASS_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"glass stage {name!r} failed: {message}\n(set GLASS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(2)
