"""Hand-checked cases of the online difficulty classifier."""

import numpy as np
import pytest

from gdro_core import ClassifierConfig, DifficultyClassifier
from gdro_core.classifier import bin_of_rate

BACKENDS = ["numba", "numpy"]


def feed(clf: DifficultyClassifier, pid: int, outcomes: list[int]) -> list[int]:
    """Feed a sequence of any-correct outcomes to one prompt; return its bin after each."""
    out = []
    for o in outcomes:
        clf.update([pid], n_correct=[o], n_total=[4])
        out.append(int(clf.bins([pid])[0]))
    return out


def test_defaults() -> None:
    cfg = ClassifierConfig()
    assert (cfg.num_bins, cfg.window, cfg.hysteresis, cfg.success_threshold, cfg.outcome, cfg.k) == (
        10, 10, 0.03, 0.5, "rate", None)
    assert cfg.decay == 0.9
    assert ClassifierConfig(outcome="any").window == 100 and ClassifierConfig(window=0).decay == 1.0
    np.testing.assert_allclose(cfg.edge_array, np.arange(1, 10) / 10)


def test_edges_go_to_the_upper_bin_exactly() -> None:
    # 0.57 * 100 floors to 56 in floating point; the classifier must say 57
    cfg = ClassifierConfig(num_bins=100)
    assert bin_of_rate(cfg, [0.57, 0.29, 0.3, 0.0, 1.0]).tolist() == [57, 29, 30, 0, 99]
    cfg10 = ClassifierConfig()
    assert bin_of_rate(cfg10, [0.1, 0.0999, 0.7, 3 / 10]).tolist() == [1, 0, 7, 3]


def test_custom_edges() -> None:
    cfg = ClassifierConfig(edges=(0.125, 0.5, 0.875))
    assert cfg.num_bins == 4
    assert bin_of_rate(cfg, [0.0, 0.125, 0.49, 0.5, 0.9, 1.0]).tolist() == [0, 1, 1, 2, 3, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unseen_prompts_are_bin_zero_with_rate_zero(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(), 5, backend=backend)
    assert clf.bins([0, 4]).tolist() == [0, 0]
    assert clf.pass_rate([0, 4]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_forgets(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(num_bins=4, window=3, hysteresis=0.0, outcome="any"), 1, backend=backend)
    rates = []
    for o in [1, 1, 0, 0, 0, 1]:
        clf.update([0], [o], [4])
        rates.append(float(clf.pass_rate([0])[0]))
    assert rates == pytest.approx([1, 1, 2 / 3, 1 / 3, 0, 1 / 3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cumulative_window_zero(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(num_bins=4, window=0, hysteresis=0.0, outcome="any"), 1, backend=backend)
    for o in [1, 1, 0, 0, 0, 1]:
        clf.update([0], [o], [4])
    assert clf.pass_rate([0])[0] == pytest.approx(0.5)
    assert clf.state.filled.dtype == np.uint32


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_longer_than_64_bits(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(window=100, outcome="any"), 1, backend=backend)
    seq = [1] * 30 + [0] * 100  # the 30 successes fall out of a 100-step window
    for i, o in enumerate(seq):
        clf.update([0], [o], [4])
        held = seq[max(0, i + 1 - 100) : i + 1]
        assert clf.pass_rate([0])[0] == pytest.approx(sum(held) / len(held))
    assert clf.pass_rate([0])[0] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_hysteresis_up_and_down(backend: str) -> None:
    # 10 bins, hysteresis 0.03, window 100. Rate 0.32 after first classification in bin 3.
    cfg = ClassifierConfig(window=100, outcome="any")
    clf = DifficultyClassifier(cfg, 1, backend=backend)
    seq = [1] * 8 + [0] * 17  # rate 8/25 = 0.32 -> bin 3 at first classification? first is 1/1 = 1.0
    bins = feed(clf, 0, seq)
    assert bins[0] == 9  # first classification: rate 1.0, no hysteresis
    # moving down from 9 needs bin(rate + 0.03) < current; at 8/25 = 0.32: bin(0.35) = 3
    assert bins[-1] == 3
    # now rate rises to 9/26 = 0.346: bin(rate) = 3, stays
    assert feed(clf, 0, [1])[-1] == 3
    # 11/28 = 0.393 -> bin 3 still; 12/29 = 0.4138 -> raw bin 4, bin(0.3838) = 3: stays (hysteresis)
    assert feed(clf, 0, [1, 1, 1]) == [3, 3, 3]
    # 13/30 = 0.4333 -> bin(0.4033) = 4 > 3: moves up
    assert feed(clf, 0, [1]) == [4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hysteresis_moves_down_with_equal_width_bins(backend: str) -> None:
    # the authors' rule never moved down with equal-width bins (method.md, defect 8); ours does
    clf = DifficultyClassifier(ClassifierConfig(window=10, outcome="any"), 1, backend=backend)
    feed(clf, 0, [1] * 5 + [0] * 5)  # rate 0.5 -> bin 5
    assert clf.bins([0])[0] == 5
    # rate 0.4 -> raw bin 4, bin(0.43) = 4 < 5: moves down
    assert feed(clf, 0, [0]) == [4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_k_uses_unbiased_pass_at_k(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(window=10, outcome="pass@k", k=2), 2, backend=backend)
    clf.update([0, 1], n_correct=[1, 3], n_total=[2, 12])  # pass@2: 1.0 and 1 - C(9,2)/C(12,2)
    np.testing.assert_allclose(clf.pass_rate([0, 1]), [1.0, 1 - 36 / 66])
    with pytest.raises(ValueError, match="n_total must be >= ClassifierConfig.k"):
        clf.update([0], n_correct=[0], n_total=[1])


def test_bin_counts_track_the_population() -> None:
    clf = DifficultyClassifier(ClassifierConfig(num_bins=4, window=4, outcome="any"), 10)
    clf.update(list(range(5)), n_correct=[1, 1, 0, 0, 1], n_total=[2] * 5)
    np.testing.assert_array_equal(clf.state.bin_counts, [7, 0, 0, 3])
    assert clf.state.bin_counts.sum() == 10


@pytest.mark.parametrize("outcome", ["rate", "any"])
def test_state_is_at_most_20_bytes_per_prompt_by_default(outcome: str) -> None:
    n = 1000
    clf = DifficultyClassifier(ClassifierConfig(window=128, outcome=outcome), n)
    per_prompt = sum(a.nbytes for k, a in clf.state_dict().items() if isinstance(a, np.ndarray)) / n
    assert per_prompt <= 20.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_pooled_rate_counts_rollouts_with_forgetting(backend: str) -> None:
    clf = DifficultyClassifier(ClassifierConfig(window=4, hysteresis=0.0), 2, backend=backend)
    visits = [(3, 4), (0, 2), (5, 10), (1, 1)]
    c_sum = n_sum = 0.0
    for c, n in visits:
        clf.update([0], [c], [n])
        c_sum, n_sum = 0.75 * c_sum + c, 0.75 * n_sum + n  # decay 1 - 1/window
        assert clf.pass_rate([0])[0] == pytest.approx(c_sum / n_sum, rel=1e-15)
    assert clf.pass_rate([1])[0] == 0.0 and clf.bins([1])[0] == 0  # unseen
    cumulative = DifficultyClassifier(ClassifierConfig(window=0), 1, backend=backend)
    for c, n in visits:
        cumulative.update([0], [c], [n])
    assert cumulative.pass_rate([0])[0] == pytest.approx(9 / 17)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_pooled_rate_does_not_depend_on_the_rollout_count(backend: str) -> None:
    # the same pass rate seen through 2 or through 12 rollouts a visit lands in the same bin;
    # "any correct" puts the 12-rollout prompt at the top (the allocation feeds into the bins)
    rate = DifficultyClassifier(ClassifierConfig(), 2, backend=backend)
    anyc = DifficultyClassifier(ClassifierConfig(outcome="any"), 2, backend=backend)
    for _ in range(6):
        for clf in (rate, anyc):
            clf.update([0, 1], [1, 6], [2, 12])  # p = 1/2 for both prompts
    assert rate.bins([0, 1]).tolist() == [5, 5]
    assert anyc.bins([0, 1]).tolist()[1] == 9


def test_derived_values_are_stored_and_the_old_names_warn() -> None:
    assert ClassifierConfig(hysteresis=-1.0) == ClassifierConfig() == ClassifierConfig(num_bins=None, hysteresis=None)  # type: ignore[arg-type]
    assert ClassifierConfig(num_bins=5).hysteresis == 0.06
    with pytest.warns(DeprecationWarning, match="use ClassifierConfig.num_bins"):
        assert ClassifierConfig(num_bins=4).bins == 4
    with pytest.warns(DeprecationWarning, match="use ClassifierConfig.hysteresis"):
        assert ClassifierConfig().margin == 0.03


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_bins": -1}, r"ClassifierConfig.num_bins must be an integer in \[0, 255\]; got -1"),
        ({"num_bins": 256}, r"ClassifierConfig.num_bins must be an integer in \[0, 255\]; got 256"),
        ({"num_bins": 2.0}, "ClassifierConfig.num_bins must be an integer; got 2.0"),
        ({"window": 4097}, r"ClassifierConfig.window must be an integer <= 4096; got 4097"),
        ({"edges": (0.5, 0.2)}, "ClassifierConfig.edges must be strictly increasing"),
        ({"edges": (0.0, 0.5)}, r"ClassifierConfig.edges\[0\] must be a finite number in \(0, 1\)"),
        ({"edges": [0.5]}, "ClassifierConfig.edges must be a tuple"),
        ({"edges": (0.5,), "num_bins": 3}, "num_bins == len\\(edges\\) \\+ 1 = 2"),
        ({"hysteresis": 0.05}, r"ClassifierConfig.hysteresis must be >= 0 and below half the narrowest bin width \(0.05\), or negative \(derived\); got 0.05"),
        ({"hysteresis": float("inf")}, "ClassifierConfig.hysteresis must be a finite number; got inf"),
        ({"k": 0}, r"ClassifierConfig.k must be an integer in \[1, 1024\]; got 0"),
        ({"success_threshold": float("nan")}, "ClassifierConfig.success_threshold must be a finite number"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        ClassifierConfig(**kwargs)


def test_update_rejections_leave_state_unchanged() -> None:
    clf = DifficultyClassifier(ClassifierConfig(window=8), 5)
    clf.update([0, 1], [1, 0], [2, 2])
    before = clf.state_dict()
    for args, err in [
        (([0, 0], [1, 1], [2, 2]), ValueError),  # duplicate ids
        (([5], [1], [2]), ValueError),  # out of range
        (([0], [3], [2]), ValueError),  # correct > total
        (([0], [1], [0]), ValueError),  # total < 1
        (([0.0], [1], [2]), TypeError),  # float id
        (([0, 1], [1], [2, 2]), ValueError),  # length mismatch
    ]:
        with pytest.raises(err):
            clf.update(*args)
        after = clf.state_dict()
        for k in before:
            np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]))


def test_state_dict_round_trip_and_config_check() -> None:
    clf = DifficultyClassifier(ClassifierConfig(window=8), 5)
    clf.update([0, 1, 2], [1, 0, 1], [2, 2, 2])
    other = DifficultyClassifier(ClassifierConfig(window=8), 5)
    other.load_state_dict(clf.state_dict())
    np.testing.assert_array_equal(other.bins(range(5)), clf.bins(range(5)))
    np.testing.assert_array_equal(other.pass_rate(range(5)), clf.pass_rate(range(5)))
    with pytest.raises(ValueError, match=r"classifier.window \(saved 8, here 9\)"):
        DifficultyClassifier(ClassifierConfig(window=9), 5).load_state_dict(clf.state_dict())
    with pytest.raises(ValueError, match=r"num_prompts \(saved 5, here 6\)"):
        DifficultyClassifier(ClassifierConfig(window=8), 6).load_state_dict(clf.state_dict())
