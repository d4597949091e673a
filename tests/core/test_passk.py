from fractions import Fraction
from math import comb

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdro_core import pass_at_k
from gdro_core.passk import check_ks


def exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(1, 0, 1), (1, 1, 1), (4, 1, 1), (8, 2, 4), (8, 0, 8), (8, 1, 8), (100, 3, 50), (1024, 1, 1000),
     (1024, 512, 8), (1024, 1023, 1024), (1024, 5, 1020), (500, 250, 499)],
)
def test_matches_exact_rationals(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), rel=1e-13, abs=1e-15)


def test_vectorised_and_broadcast() -> None:
    n = np.array([4, 8, 16])
    c = np.array([0, 2, 16])
    out = pass_at_k(n, c, 2)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [exact(4, 0, 2), exact(8, 2, 2), 1.0], rtol=1e-14)
    assert isinstance(pass_at_k(4, 1, 1), float)


def test_k_equal_n_is_any_correct() -> None:
    for n in (2, 5, 12):
        for c in range(n + 1):
            assert pass_at_k(n, c, n) == (1.0 if c > 0 else 0.0)


@pytest.mark.parametrize(("n", "c", "k", "name"), [(4, 1, 0, "k"), (4, -1, 1, "c"), (4, 1, 5, "k"), (4, 5, 1, "c")])
def test_value_errors_name_the_parameter(n: int, c: int, k: int, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("bad", [4.0, True, np.array([4.0])])
def test_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="n must be an integer"):
        pass_at_k(bad, 1, 1)


@given(st.one_of(st.integers(-3, 20), st.lists(st.one_of(st.integers(-3, 20), st.booleans()), max_size=5)),
       st.one_of(st.none(), st.integers(1, 16)), st.sampled_from(["list", "tuple", "numpy"]))
def test_check_ks_accepts_exactly_the_valid_k_lists(ks: object, most: int | None, shape: str) -> None:
    seq = [ks] if isinstance(ks, int) else list(ks)  # type: ignore[call-overload]
    valid = (bool(seq) and all(type(k) is int and k >= 1 for k in seq)
             and (most is None or max(seq) <= most))
    given_ks: object = ks
    if isinstance(ks, list) and shape == "tuple":
        given_ks = tuple(ks)
    elif shape == "numpy" and all(type(k) is int for k in seq):  # numpy integers, as YAML-free code has
        given_ks = np.int64(ks) if isinstance(ks, int) else [np.int64(k) for k in seq]
    if valid:
        out = check_ks("pass_at_k", given_ks, most=most)
        assert out == tuple(sorted(set(seq))) and all(type(k) is int for k in out)
    else:
        with pytest.raises(ValueError, match=r"^pass_at_k must be .*; got "):
            check_ks("pass_at_k", given_ks, most=most)


def test_check_ks_takes_numpy_arrays_and_refuses_bytes_and_tables() -> None:
    assert check_ks("pass_at_k", np.array([4, 1])) == (1, 4)
    for bad in (b"\x01\x02", np.array([[1]]), np.array([1.0]), "12"):
        with pytest.raises(ValueError, match=r"^pass_at_k must be an integer >= 1 or a non-empty"):
            check_ks("pass_at_k", bad)
