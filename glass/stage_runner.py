"""What every stage entry point shares: logging setup and turning user errors into clean exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from glass.errors import GlassError


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("GLASS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # accelerate logs every file of every checkpoint at INFO; keep its warnings only
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run ``main``. The project's own errors (``glass.errors.GlassError``: a wrong param, a
    missing or unreadable input, whose message says what to do) print one clear line and exit
    with status 2 (the traceback with GLASS_DEBUG=1); any other exception is a bug and keeps its
    full traceback."""
    setup_logging()
    try:
        main()
    except GlassError as error:
        if os.environ.get("GLASS_DEBUG"):
            raise
        print(f"glass stage {name!r} failed: {error}\n(set GLASS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(2)
