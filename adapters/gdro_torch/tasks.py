"""Verifiable tasks: the built-in graded addition family and reasoning-gym datasets.

A task has a training split, whose prompt ids are stable dataset indices (the controller keys its
state by them), and a held-out evaluation split drawn from a different seed. Every item carries a
difficulty ``level`` (an int) so evaluation can be reported per level. Rewards are exact: 1.0 for
a fully correct answer, else 0.0 (reasoning-gym's partial credit invites reward hacking).

Task specs are strings, ``name`` or ``name:key=value,key=value``::

    addition:min_digits=1,max_digits=8          # built in
    chain_sum:min_digits=1,max_digits=4         # any reasoning-gym dataset, with its knobs
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Item", "Split", "Task", "load_task", "parse_task_spec"]

Scalar = int | float | bool | str


@dataclass(frozen=True)
class Item:
    """One prompt of a split.

    Attributes:
        prompt: The text the model is conditioned on.
        answer: The reference completion (the SFT target; never shown to the policy).
        level: Difficulty level (larger is harder; for addition, the number of digits).

    Examples:
        >>> item = load_task("addition:max_digits=3,size=50").train.item(0)
        >>> item
        Item(prompt='511+26=', answer='735', level=3)
        >>> item.answer == str(511 + 26)[::-1]  # digits least significant first by default
        True
    """

    prompt: str
    answer: str
    level: int


@dataclass
class Split:
    """A fixed-size, lazily built list of items with an exact scorer.

    Attributes:
        size: Number of items; ids are ``0..size-1``.
        make: ``make(index) -> (Item, payload)``; the payload is what the scorer needs.
        scorer: ``scorer(payload, text) -> bool``, True for a fully correct completion.
        cache: Keep built items (off for the large SFT stream).

    Examples:
        A split of "double this number" prompts, scored by exact match:

        >>> def make(i):
        ...     return Item(prompt=f"2*{i}=", answer=str(2 * i), level=len(str(i))), 2 * i
        >>> split = Split(size=20, make=make, scorer=lambda want, text: text.strip() == str(want))
        >>> len(split), split.item(12)
        (20, Item(prompt='2*12=', answer='24', level=2))
        >>> split.reward(12, " 24"), split.reward(12, "25")
        (1.0, 0.0)
        >>> split.item(20)
        Traceback (most recent call last):
        ...
        IndexError: item index must be in [0, 20); got 20
    """

    size: int
    make: Callable[[int], tuple[Item, Any]]
    scorer: Callable[[Any, str], bool]
    cache: bool = True
    _cache: dict[int, tuple[Item, Any]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.size

    def _get(self, index: int) -> tuple[Item, Any]:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"item index must be in [0, {self.size}); got {index}")
        if not self.cache:
            return self.make(index)
        if index not in self._cache:
            self._cache[index] = self.make(index)
        return self._cache[index]

    def item(self, index: int) -> Item:
        """The item with this id."""
        return self._get(index)[0]

    def reward(self, index: int, text: str) -> float:
        """Exact reward of a completion: 1.0 if fully correct, else 0.0."""
        return 1.0 if self.scorer(self._get(index)[1], text) else 0.0


@dataclass
class Task:
    """A task: a spec, three splits and a generation length.

    Attributes:
        spec: The canonical spec string (``name:key=value,...``, keys sorted).
        train: The RL training split; prompt ids are its indices. Small enough by default that
            prompts recur over a run, so the difficulty classifier sees each one several times.
        eval: Held-out evaluation split.
        sft: A large stream for the supervised warm-up, drawn apart from both, so the warm-up
            neither memorises the RL prompts nor sees the held-out ones.
        max_answer_chars: Longest reference answer, in characters (sets the generation length).

    Examples:
        >>> task = load_task("addition:min_digits=2,max_digits=3,eval_size=10")
        >>> task.spec, len(task.train), len(task.eval), len(task.sft)
        ('addition:eval_size=10,max_digits=3,min_digits=2', 1000, 10, 1000000)
        >>> task.max_answer_chars  # a 3-digit sum has at most 4 digits
        4
        >>> sorted({task.train.item(i).level for i in range(100)})
        [2, 3]
    """

    spec: str
    train: Split
    eval: Split
    sft: Split
    max_answer_chars: int


def _parse_value(text: str) -> Scalar:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_task_spec(spec: str) -> tuple[str, dict[str, Scalar]]:
    """Split ``name:key=value,...`` into the name and typed knobs (int, float, bool or str).

    Raises:
        ValueError: If the name is empty or malformed, a knob is not ``key=value`` or a key is
            given twice.

    Examples:
        >>> parse_task_spec("chain_sum:min_digits=2,reverse=false,ratio=0.5,mode=fast")
        ('chain_sum', {'min_digits': 2, 'reverse': False, 'ratio': 0.5, 'mode': 'fast'})
        >>> parse_task_spec("addition")
        ('addition', {})
        >>> parse_task_spec("addition:max_digits")
        Traceback (most recent call last):
        ...
        ValueError: malformed task spec 'addition:max_digits': 'max_digits' is not key=value
    """
    name, _, rest = spec.strip().partition(":")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"malformed task spec {spec!r}: expected name or name:key=value,...")
    knobs: dict[str, Scalar] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"malformed task spec {spec!r}: {part!r} is not key=value")
        if key.strip() in knobs:
            raise ValueError(f"malformed task spec {spec!r}: {key.strip()!r} given twice")
        knobs[key.strip()] = _parse_value(value.strip())
    return name, knobs


def _canonical(name: str, knobs: dict[str, Scalar]) -> str:
    if not knobs:
        return name
    return (
        name
        + ":"
        + ",".join(
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(knobs.items())
        )
    )


def _int_knob(knobs: dict[str, Scalar], key: str, default: int, lo: int, hi: int, spec: str) -> int:
    value = knobs.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"task {spec!r}: {key} must be an integer in [{lo}, {hi}]; got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Built-in: addition with a digits knob (heterogeneous difficulty, a hard tail)
# ---------------------------------------------------------------------------------------------


def _addition(spec: str, knobs: dict[str, Scalar]) -> Task:
    """``addition``: ``a+b=``, each operand with a uniform number of digits in [min, max].

    Knobs: ``min_digits`` (1), ``max_digits`` (8), ``reverse`` (true: the answer's digits are
    written least significant first, which a small model learns far more easily), ``size``
    (1000 training prompts), ``eval_size`` (200), ``seed`` (0, the dataset seed). The SFT
    warm-up draws from a separate stream of a million items.
    """
    k = dict(knobs)
    lo = _int_knob(k, "min_digits", 1, 1, 18, spec)
    hi = _int_knob(k, "max_digits", 8, 1, 18, spec)
    size = _int_knob(k, "size", 1000, 1, 10**9, spec)
    eval_size = _int_knob(k, "eval_size", 200, 1, 10**6, spec)
    seed = _int_knob(k, "seed", 0, 0, 2**31 - 1, spec)
    reverse = k.pop("reverse", True)
    if not isinstance(reverse, bool):
        raise ValueError(f"task {spec!r}: reverse must be true or false; got {reverse!r}")
    if lo > hi:
        raise ValueError(f"task {spec!r}: min_digits must be <= max_digits; got {lo} > {hi}")
    if k:
        raise ValueError(
            f"task {spec!r}: unknown knob(s) {sorted(k)} for addition; valid: "
            "min_digits, max_digits, reverse, size, eval_size, seed"
        )

    def make(split: int, index: int) -> tuple[Item, str]:
        rng = np.random.default_rng([seed, split, index])
        da, db = (int(d) for d in rng.integers(lo, hi + 1, size=2))
        a, b = (int(rng.integers(0, 10**d)) for d in (da, db))
        answer = str(a + b)[::-1] if reverse else str(a + b)
        return Item(prompt=f"{a}+{b}=", answer=answer, level=max(da, db)), answer

    def score(answer: str, text: str) -> bool:
        return text.strip() == answer

    return Task(
        spec=_canonical("addition", knobs),
        train=Split(size, functools.partial(make, 0), score),
        eval=Split(eval_size, functools.partial(make, 1), score),
        sft=Split(10**6, functools.partial(make, 2), score, cache=False),
        max_answer_chars=hi + 1,
    )


BUILTIN: dict[str, Callable[[str, dict[str, Scalar]], Task]] = {"addition": _addition}


# ---------------------------------------------------------------------------------------------
# reasoning-gym datasets by name
# ---------------------------------------------------------------------------------------------


def _rg_level(meta: dict[str, Any]) -> int:
    """The item's own value of its first difficulty knob (``num_digits`` preferred), else 0."""
    names = ["num_digits", *meta.get("difficulty", {}).keys()]
    for key in names:
        for cand in (key, key.removeprefix("min_").removeprefix("max_")):
            if isinstance(meta.get(cand), int) and not isinstance(meta.get(cand), bool):
                return int(meta[cand])
    return 0


def _rg_prompt(item: dict[str, Any]) -> str:
    """A compact prompt for a character model: ``expression=`` when the item has one."""
    expr = item["metadata"].get("expression")
    if isinstance(expr, str) and expr:
        return expr.replace(" ", "") + "="
    return str(item["question"])


def _reasoning_gym(name: str, spec: str, knobs: dict[str, Scalar]) -> Task:
    import reasoning_gym

    k = dict(knobs)
    size = _int_knob(k, "size", 10_000, 1, 10**9, spec)
    eval_size = _int_knob(k, "eval_size", 200, 1, 10**6, spec)
    seed = _int_knob(k, "seed", 1, 0, 2**31 - 1, spec)
    try:
        train_ds = reasoning_gym.create_dataset(name, seed=seed, size=size, **k)
        eval_ds = reasoning_gym.create_dataset(name, seed=seed + 7919, size=eval_size, **k)
        sft_ds = reasoning_gym.create_dataset(name, seed=seed + 104_729, size=100_000, **k)
        probe = eval_ds[0]
    except Exception as exc:  # reasoning-gym raises TypeError, AssertionError, ValueError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"task {spec!r}: reasoning-gym rejected the knobs ({first})") from None
    del probe

    def make(ds: Any, index: int) -> tuple[Item, Any]:
        entry = ds[index]
        item = Item(
            prompt=_rg_prompt(entry),
            answer=str(entry["answer"]),
            level=_rg_level(entry["metadata"]),
        )
        return item, (ds, entry)

    def score(payload: Any, text: str) -> bool:
        ds, entry = payload
        try:
            return float(ds.score_answer(text.strip(), entry)) == 1.0
        except Exception:  # a scorer crashing on garbage output is a wrong answer
            return False

    task = Task(
        spec=_canonical(name, knobs),
        train=Split(size, functools.partial(make, train_ds), score),
        eval=Split(eval_size, functools.partial(make, eval_ds), score),
        sft=Split(100_000, functools.partial(make, sft_ds), score, cache=False),
        max_answer_chars=0,
    )
    task.max_answer_chars = max(len(task.eval.item(i).answer) for i in range(min(eval_size, 200)))
    return task


def load_task(spec: str) -> Task:
    """Build a task from its spec.

    Args:
        spec: ``name`` or ``name:key=value,...``; ``name`` is ``addition`` or a reasoning-gym
            dataset (``chain_sum``, ``products``, ``basic_arithmetic``, ...).

    Returns:
        The task, with items built lazily.

    Raises:
        ValueError: For a malformed spec, an unknown task or a knob the task rejects.

    Examples:
        >>> task = load_task("addition:max_digits=3,size=50")
        >>> task.train.item(0).level <= 3, len(task.train), task.spec
        (True, 50, 'addition:max_digits=3,size=50')
    """
    name, knobs = parse_task_spec(spec)
    if name in BUILTIN:
        return BUILTIN[name](spec, knobs)
    import reasoning_gym

    registry = getattr(reasoning_gym.factory, "DATASETS", {})
    if name not in registry:
        raise ValueError(
            f"unknown task {name!r}: expected 'addition' or a reasoning-gym dataset "
            f"such as chain_sum, products, basic_arithmetic ({len(registry)} known)"
        )
    return _reasoning_gym(name, spec, knobs)
