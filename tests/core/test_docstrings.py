"""Every public name of gdro_core documents itself with an example that doctest runs."""

import inspect

import pytest

import gdro_core

PUBLIC = [n for n in gdro_core.__all__ if not n.isupper()]  # SIGNALS is a registry, not code


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_have_a_doctest_example(name: str) -> None:
    doc = inspect.getdoc(getattr(gdro_core, name)) or ""
    assert "Examples:" in doc and ">>>" in doc, name


@pytest.mark.parametrize("name", PUBLIC)
def test_public_callables_document_their_arguments(name: str) -> None:
    obj = getattr(gdro_core, name)
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")]
    doc = inspect.getdoc(obj) or ""
    for p in params:
        assert f"{p}:" in doc or f"{p} " in doc, f"{name}.{p}"
