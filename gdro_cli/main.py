"""Entry point of the ``gdro`` console script.

A subcommand is a module with two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # the exit code

registered below by its dotted path, and imported only when it is the one being run or asked
for its help (``gdro report --help``); ``gdro --help`` lists them without importing any. Errors
a user can fix (``ValueError``, ``TypeError``, ``FileNotFoundError``, ``FileExistsError``) are
printed as one line, without a traceback, and exit with code 2; so is a subcommand whose
third-party packages are missing, with the pip extra that brings them.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["EXTRAS", "SUBCOMMANDS", "MissingExtraError", "main"]

#: The pip extra that brings each subcommand's third-party packages.
EXTRAS: dict[str, str] = {"train": "torch", "simulate": "cli", "report": "cli"}

# name -> (module path, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gdro_cli.train", "train a causal LM with GRPO + GDRO (the torch loop)"),
    "simulate": ("gdro_cli.simulate", "simulate GRPO on a synthetic prompt population"),
    "report": ("gdro_cli.report", "plot and summarise run directories"),
}


def _build_parser(selected: str | None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdro",
        description="Group-DRO controllers for GRPO: prompt reweighting and rollout allocation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = _load(name)
            if "argv" in inspect.signature(module.add_arguments).parameters:
                module.add_arguments(sp, argv=argv)  # e.g. --help shows the named preset
            else:
                module.add_arguments(sp)
    return parser


class MissingExtraError(ImportError):
    """A subcommand's third-party package is not installed: the message names the extra.

    Examples:
        >>> str(MissingExtraError("gdro simulate needs the 'cli' extra"))
        "gdro simulate needs the 'cli' extra"
        >>> EXTRAS["simulate"], EXTRAS["train"]
        ('cli', 'torch')
    """


def _load(name: str) -> ModuleType:
    """Import a subcommand's module; a missing third-party package names the extra to install."""
    try:
        return importlib.import_module(SUBCOMMANDS[name][0])
    except ModuleNotFoundError as exc:
        raise _missing_extra(name, exc) from exc


def _missing_extra(name: str, exc: ModuleNotFoundError) -> Exception:
    missing = (exc.name or "").split(".")[0]
    if not missing or missing.startswith("gdro_"):
        return exc
    extra = EXTRAS[name]
    hint = " (install torch==2.13.0 first for the CPU build)" if extra == "torch" else ""
    return MissingExtraError(
        f"gdro {name} needs the '{extra}' extra (the package {missing!r} is not installed): "
        f"pip install 'gdro[{extra}]'{hint}"
    )


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
    try:
        parser = _build_parser(selected, argv)
    except MissingExtraError as exc:
        print(f"gdro {selected}: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        module = _load(args.command)
        try:
            return int(module.run(args))
        except ModuleNotFoundError as exc:  # a package imported only when the command runs
            err = _missing_extra(args.command, exc)
            if err is exc:
                raise
            raise err from exc
    except KeyboardInterrupt:
        print("gdro: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, MissingExtraError) as exc:
        print(f"gdro {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
