"""Student-t intervals shared by the lab, the experiment and the torch loop's evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdro_core.stats import mean_ci, t_quantile_975


def test_mean_ci_uses_student_t() -> None:
    m, h = mean_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert m == 3.0 and h == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert math.isnan(mean_ci(np.array([1.0]))[1])
    assert t_quantile_975(100) == 1.96
    with pytest.raises(ValueError, match="df must be an integer >= 1; got 0"):
        t_quantile_975(0)


def test_t_quantiles_shrink_with_degrees_of_freedom() -> None:
    qs = [t_quantile_975(df) for df in range(1, 40)]
    assert all(a >= b for a, b in zip(qs, qs[1:]))
    assert t_quantile_975(4) == pytest.approx(2.776) and t_quantile_975(1000) == pytest.approx(1.96)
