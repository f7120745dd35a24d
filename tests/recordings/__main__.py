"""``python -m tests.recordings fetch [--force] [--root DIR]``: see tests/recordings/fetch.py."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tests.recordings.fetch import FetchError, default_root, fetch


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.recordings")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("fetch", help="download and convert the test recordings")
    get.add_argument("--root", type=Path, help="cache folder [default: $VOICED_RECORDINGS]")
    get.add_argument("--force", action="store_true", help="rebuild even when complete")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    root = args.root or default_root()
    try:
        fetch(root, force=args.force)
    except FetchError as exc:
        sys.stderr.write(f"tests.recordings: cannot fetch the test recordings into {root}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
