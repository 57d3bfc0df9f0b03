"""`hytron <verb>`: the command line. Nothing imports this package.

Verbs live in the modules of this package, grouped by stage (model, data, train, ...). A module declares
a verb with a function `add_<verb>(sub)` that adds its subparser and sets `func` to a `cmd_<verb>(args)`.
Heavy imports happen inside the verb so `hytron --help` stays fast and optional extras stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    from hytron import __version__

    parser = argparse.ArgumentParser(
        prog="hytron", description="Build your own hybrid Mamba-2/Transformer language model."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in sorted(vars(module)):
            if name.startswith("add_"):
                getattr(module, name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:  # user errors: one clear line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hytron {args.verb}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
