"""Entry point of the ``gdro`` console script.

A subcommand is a module with two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # the exit code

registered below by its dotted path, and imported only when it is the one being run or asked
for its help (``gdro report --help``); ``gdro --help`` lists them without importing any. Errors
a user can fix (``ValueError``, ``TypeError``, ``FileNotFoundError``, ``FileExistsError``) are
printed as one line, without a traceback, and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "main"]

# name -> (module path, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gdro_torch.cli", "train a causal LM with GRPO + GDRO (the torch loop)"),
    "simulate": ("gdro_lab.cli", "simulate GRPO on a synthetic prompt population"),
    "report": ("gdro_cli.report", "plot and summarise run directories"),
}


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdro",
        description="Group-DRO controllers for GRPO: prompt reweighting and rollout allocation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_path, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_path).add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gdro`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: The arguments after the program name.

    Returns:
        The exit code: the subcommand's, 0 for the help shown without a subcommand, 2 for an
        error a user can fix (printed as one line on stderr), 130 when interrupted.

    Examples:
        >>> import contextlib, sys
        >>> main([])  # doctest: +ELLIPSIS
        usage: gdro [-h] COMMAND ...
        ...
        0
        >>> with contextlib.redirect_stderr(sys.stdout):  # show the error line
        ...     code = main(["report", "no/such/run"])
        gdro report: error: no/such/run is not a run directory: no config.json
        >>> code
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in SUBCOMMANDS:
        selected = None
    parser = _build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        print("gdro: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"gdro {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
