"""docs/configuration.md lists every config field with its true default."""

import dataclasses
import re
from pathlib import Path

import pytest

from gdro_core import ClassifierConfig, PromptConfig, RolloutConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def table(name: str) -> dict[str, str]:
    text = DOC.read_text()
    section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", section, flags=re.M)
    return dict(rows)


@pytest.mark.parametrize("cls", [ClassifierConfig, PromptConfig, RolloutConfig])
def test_every_field_is_documented_with_its_default(cls: type) -> None:
    documented = table(cls.__name__)
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(documented) == set(fields)
    for name, default in fields.items():
        assert documented[name] == repr(default), name


@pytest.mark.parametrize("cls", [ClassifierConfig, PromptConfig, RolloutConfig])
def test_every_field_is_in_the_docstring(cls: type) -> None:
    doc = cls.__doc__ or ""
    for f in dataclasses.fields(cls):
        assert f"        {f.name}:" in doc, f.name
