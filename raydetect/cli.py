"""The ``raydetect`` command line: one sub-command per module in :mod:`raydetect.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning the exit status.
Command modules are imported lazily so ``raydetect plan`` does not pay for Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command name -> module under raydetect.commands that registers it.
COMMANDS = {
    "detect": "detect",
    "serve": "serve",
    "eval": "evaluate",
    "sweep": "sweep",
    "plan": "plan",
    "preview": "preview",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydetect",
        description="Find and crop every face in images and videos with a batched MTCNN on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"raydetect.commands.{module_name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
