"""The command line every tiny-model builder shares: ``python -m glass.tiny.<model> OUT [--seed N]``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def run_builder_cli(build: Callable[..., Path], what: str, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Build the tiny random-weight {what} folder.")
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights")
    args = parser.parse_args(argv)
    print(build(args.out_dir, seed=args.seed))
