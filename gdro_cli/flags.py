"""Command-line flags generated from the core's config fields: one flag per setting.

Every field of ``ClassifierConfig``, ``PromptConfig`` and ``RolloutConfig`` becomes a flag
``--SECTION.FIELD`` (``--rollout.mean``, ``--classifier.outcome``), typed from the field's
annotation and documented from the config's docstring, so a new core setting is on the command
line the moment it exists. ``--recipe`` picks a named recipe (``gdro_core.recipes``). The flags
default to ``None`` so that a command can tell the flags given from the preset's values; the help
shows the value that will run.

Examples:
    >>> import argparse
    >>> from gdro_core import ControllerConfig
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> add_controller_arguments(parser, ControllerConfig())
    >>> args = parser.parse_args(["--rollout.mean", "8", "--classifier.edges", "0.2,0.6"])
    >>> overrides(args)
    {'classifier': {'edges': (0.2, 0.6)}, 'rollout': {'mean': 8}}
    >>> apply(ControllerConfig(), args).rollout.mean
    8
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gdro_core import ClassifierConfig, ControllerConfig, PromptConfig, RolloutConfig
from gdro_core.recipes import RECIPES

__all__ = [
    "SECTIONS",
    "ControllerFlag",
    "add_controller_arguments",
    "apply",
    "field_help",
    "flags",
    "named_preset",
    "overrides",
    "parser_for",
]

#: The config classes behind the flags, by section name.
SECTIONS: dict[str, type] = {
    "classifier": ClassifierConfig,
    "prompt": PromptConfig,
    "rollout": RolloutConfig,
}


@dataclasses.dataclass(frozen=True)
class ControllerFlag:
    """One generated flag.

    Examples:
        >>> flag = next(f for f in flags() if f.name == "rollout.mean")
        >>> flag.option, flag.parse("8"), flag.choices
        ('--rollout.mean', 8, None)
    """

    section: str
    field: str
    parse: Callable[[str], Any]
    choices: tuple[str, ...] | None
    help: str

    @property
    def name(self) -> str:
        """``SECTION.FIELD``, also the argparse destination."""
        return f"{self.section}.{self.field}"

    @property
    def option(self) -> str:
        """The flag itself: ``--SECTION.FIELD``."""
        return "--" + self.name

    @property
    def summary(self) -> str:
        """The help's first clause, for ``--help``."""
        return _short(self.help)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def inner(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    inner.__name__ = getattr(parse, "__name__", "value")
    return inner


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers; got {text!r}"
        ) from None


def parser_for(
    hint: Any, *, nullable: bool = True
) -> tuple[Callable[[str], Any], tuple[str, ...] | None]:
    """The parse function and choices of a flag for a field annotated ``hint``.

    Args:
        hint: the field's resolved annotation.
        nullable: for ``X | None``, also accept ``none`` (giving None); otherwise parse an X.

    Examples:
        >>> from typing import Literal
        >>> parser_for(Literal["a", "b"])[1], parser_for(int | None)[0]("none")
        (('a', 'b'), None)
    """
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        inner = next(a for a in args if a is not type(None))
        parse, choices = parser_for(inner)
        return (_optional(parse) if nullable else parse), choices
    if typing.get_origin(hint) is typing.Literal:
        return str, tuple(str(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return _floats, None
    if hint is bool:
        return _bool, None
    if hint in (int, float, str):
        return hint, None
    return str, None


def _docs(cls: type) -> dict[str, str]:
    """``field -> text`` from the ``Args:`` (or ``Attributes:``) section of a class's docstring."""
    doc = (cls.__doc__ or "").replace("Attributes:", "Args:")
    body = doc.split("Args:", 1)[1].split("Examples:", 1)[0] if "Args:" in doc else ""
    out: dict[str, str] = {}
    name = None
    for line in body.splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


def flags() -> list[ControllerFlag]:
    """Every controller flag, in section and field order.

    Examples:
        >>> names = [f.name for f in flags()]
        >>> names[:3], "prompt.eta" in names, len(names) == sum(
        ...     len(dataclasses.fields(c)) for c in SECTIONS.values())
        (['classifier.num_bins', 'classifier.edges', 'classifier.window'], True, True)
    """
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        docs = _docs(cls)
        for f in dataclasses.fields(cls):
            parse, choices = parser_for(hints[f.name])
            out.append(ControllerFlag(section, f.name, parse, choices, docs.get(f.name, "")))
    return out


def _short(text: str) -> str:
    """The docstring's first clause (up to ". " or "; " outside parentheses), for ``--help``."""
    text = text.replace("``", "").replace("%", "%%")
    depth, cut = 0, len(text)
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".;" and text[i + 1 : i + 2] in (" ", ""):
            cut = i
            break
    first = text[:cut]
    return first if len(first) < 160 else first[:157] + "..."


def field_help(cls: type) -> dict[str, str]:
    """``field -> help``: the first clause of each field's text in ``cls``'s docstring.

    Examples:
        >>> field_help(RolloutConfig)["mean"]
        'the budget, rollouts per prompt on average (an integer; exact every step)'
    """
    return {name: _short(text) for name, text in _docs(cls).items()}


def named_preset(argv: Sequence[str] | None, presets: Mapping[str, Any]) -> str | None:
    """The preset ``argv`` names, read as argparse will read it (``--preset NAME``,
    ``--preset=NAME``, an abbreviation, the last one winning), for ``--help`` to show its
    values; None when none or an unknown one is named. Only what precedes ``-h``/``--help``
    counts, as argparse stops there.

    Examples:
        >>> named_preset(["--preset=smoke", "--pres", "full", "-h", "--preset", "x"],
        ...              {"smoke": 1, "full": 2})
        'full'
        >>> named_preset([], {}), named_preset(["--preset"], {})
        (None, None)
    """
    args = list(argv or [])
    for i, a in enumerate(args):  # argparse stops at the help flag
        if a in ("-h", "--help"):
            args = args[:i]
            break
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument("--preset")
    try:
        name = probe.parse_known_args(args)[0].preset
    except argparse.ArgumentError:  # the real parser reports it
        return None
    return name if name in presets else None


def add_controller_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    defaults: ControllerConfig,
    *,
    title: bool = True,
) -> None:
    """Add ``--recipe`` and one ``--SECTION.FIELD`` flag per core setting to ``parser``.

    Args:
        parser: a parser (a group per section is added) or a group (flags go into it).
        defaults: the config the command runs when no flag is given; its values are shown in
            the help as ``[value]``.
        title: add one argument group per section (when ``parser`` is a parser).

    Examples:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="demo")
        >>> add_controller_arguments(parser, ControllerConfig())
        >>> "--prompt.eta ETA" in parser.format_help() and "[0.65]" in parser.format_help()
        True
    """
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="settings that belong together, applied before the --SECTION.FIELD flags "
        "(paper: the paper's loss signal and bandit knobs; reward: reward-derived signals, "
        "bandit knobs sized to them)",
    )
    values = defaults.to_dict()
    groups: dict[str, Any] = {}
    for flag in flags():
        target: Any = parser
        if title and isinstance(parser, argparse.ArgumentParser):
            if flag.section not in groups:
                groups[flag.section] = parser.add_argument_group(
                    f"controller: {SECTIONS[flag.section].__name__} (--{flag.section}.*)"
                )
            target = groups[flag.section]
        shown = values[flag.section][flag.field]
        if isinstance(shown, list):
            shown = ",".join(str(x) for x in shown)
        target.add_argument(
            flag.option,
            dest=flag.name,
            type=flag.parse,
            choices=flag.choices,
            default=None,
            metavar=flag.field.upper(),
            help=f"{flag.summary} [{shown}]",
        )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The controller flags given, as a nested mapping (``--recipe`` not included).

    Examples:
        >>> import argparse
        >>> overrides(argparse.Namespace(**{"prompt.eta": 0.5, "rollout.mean": None}))
        {'prompt': {'eta': 0.5}}
    """
    out: dict[str, dict[str, Any]] = {}
    for flag in flags():
        value = getattr(args, flag.name, None)
        if value is not None:
            out.setdefault(flag.section, {})[flag.field] = value
    return out


def apply(base: ControllerConfig, args: argparse.Namespace) -> ControllerConfig:
    """``base`` with ``--recipe`` (its settings first) and then the field flags applied.

    Raises:
        ValueError: a value the core refuses (``controller.SECTION: Config.FIELD must be ...``).

    Examples:
        >>> import argparse
        >>> args = argparse.Namespace(recipe="reward", **{"rollout.mode": "bandit"})
        >>> cfg = apply(ControllerConfig(), args)
        >>> cfg.rollout.mode, cfg.rollout.arm_signal, cfg.prompt.signal
        ('bandit', 'variance', 'variance')
    """
    given: dict[str, Any] = overrides(args)
    recipe = getattr(args, "recipe", None)
    if recipe:
        given["recipe"] = recipe
    return base.merged(given, where="controller")
