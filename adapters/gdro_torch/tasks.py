"""Verifiable tasks: the built-in graded addition family and reasoning-gym datasets.

A task has a training split, whose prompt ids are stable dataset indices (the controller keys its
state by them), a held-out evaluation split and a large stream for the supervised warm-up. The
held-out prompts are kept apart by their text: no held-out prompt is a training prompt, none
occurs twice, and the warm-up's stream never yields one (:func:`held_out_indices`). Every item
carries a difficulty ``level`` (an int) so evaluation can be reported per level. Rewards are
exact: 1.0 for a fully correct answer, else 0.0 (reasoning-gym's partial credit invites reward
hacking).

Task specs are strings, ``name`` or ``name:key=value,key=value``::

    addition:min_digits=1,max_digits=8          # built in
    chain_sum:min_digits=1,max_digits=4         # any reasoning-gym dataset, with its knobs
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Item", "Split", "Task", "held_out_indices", "load_task", "parse_task_spec"]

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
        eval: Held-out evaluation split: distinct prompts, none of them a training prompt, with
            the levels in the proportions the task draws them (:func:`held_out_indices`).
        sft: A large stream for the supervised warm-up that never yields a held-out prompt (an
            item whose prompt is held out is replaced by another draw), so the warm-up does not
            see the evaluation. Training prompts may occur in it, as in a pretraining corpus.
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


def held_out_indices(
    candidate: Callable[[int], Item], size: int, banned: set[str], *, spec: str
) -> list[int]:
    """Pick ``size`` held-out items from a candidate stream, apart from the ``banned`` prompts.

    The first ``size`` candidates are the draft. A draft item whose prompt is banned (a
    training prompt) or already held out is replaced by the next unused candidate *of the same
    level* further down the stream, so the held-out split keeps the level proportions in which
    the task draws its items, and every held-out prompt is distinct and not banned. A level
    with too few distinct prompts left (such as one-digit sums once the training split holds
    most of the 100) is replaced by the next free candidate of any level.

    Args:
        candidate: ``candidate(index) -> Item``, deterministic.
        size: Held-out items wanted.
        banned: Prompts that may not be held out.
        spec: The task spec (named in the error).

    Returns:
        ``size`` indices into the candidate stream, in draft order.

    Raises:
        ValueError: If the stream runs out of free prompts: replacements are looked for among
            ``10 * size + 10,000`` further candidates.

    Examples:
        Numbers 0-29 drawn in a scrambled order (one digit is level 1, two digits level 2),
        with "7" and "21" training prompts:

        >>> def candidate(i):
        ...     n = (7 * i) % 30
        ...     return Item(prompt=f"{n}", answer=str(n), level=len(str(n)))
        >>> draft = [candidate(i).prompt for i in range(6)]
        >>> draft
        ['0', '7', '14', '21', '28', '5']
        >>> picked = held_out_indices(candidate, 6, {"7", "21"}, spec="demo")
        >>> [candidate(i).prompt for i in picked]  # the next free 1-digit and 2-digit numbers
        ['0', '3', '14', '12', '28', '5']

        With every one-digit number banned, the one-digit draft items get two-digit
        replacements; asking for more than the 20 free numbers fails:

        >>> picked = held_out_indices(candidate, 4, {str(n) for n in range(10)}, spec="demo")
        >>> [candidate(i).prompt for i in picked]
        ['28', '12', '14', '21']
        >>> held_out_indices(candidate, 21, {str(n) for n in range(10)}, spec="demo")
        ... # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: task 'demo': eval_size must leave enough distinct prompts apart from the
        training split (too few in 10231 draws); got 21
    """
    taken: set[str] = set()
    spare: dict[int, deque[int]] = {}
    cursor, limit = size, size + 10 * size + 10_000

    def free(item: Item) -> bool:
        return item.prompt not in banned and item.prompt not in taken

    def first_free(queue: deque[int]) -> int | None:
        while queue and not free(candidate(queue[0])):
            queue.popleft()
        return queue[0] if queue else None

    def replacement(level: int) -> int:
        nonlocal cursor
        queue = spare.setdefault(level, deque())
        if first_free(queue) is not None:
            return queue.popleft()
        while cursor < limit:
            index, cursor = cursor, cursor + 1
            item = candidate(index)
            if not free(item):
                continue
            if item.level == level:
                return index
            spare.setdefault(item.level, deque()).append(index)
        heads = [(h, q) for q in spare.values() if (h := first_free(q)) is not None]
        if not heads:
            raise ValueError(
                f"task {spec!r}: eval_size must leave enough distinct prompts apart from the "
                f"training split (too few in {limit} draws); got {size}"
            )
        return min(heads, key=lambda hq: hq[0])[1].popleft()  # the earliest of any level

    out: list[int] = []
    for index in range(size):
        item = candidate(index)
        if not free(item):
            index = replacement(item.level)
            item = candidate(index)
        taken.add(item.prompt)
        out.append(index)
    return out


def _avoiding(
    make: Callable[[int], tuple[Item, Any]],
    held_out: set[str],
    alternative: Callable[[int, int], int],
    spec: str,
) -> Callable[[int], tuple[Item, Any]]:
    """``make`` for the warm-up's stream: an item whose prompt is held out is drawn again, from
    ``alternative(index, attempt)``, until it is not (at most 1,000 times)."""

    def draw(index: int) -> tuple[Item, Any]:
        out = make(index)
        attempt = 0
        while out[0].prompt in held_out:
            attempt += 1
            if attempt > 1000:
                raise ValueError(
                    f"task {spec!r}: the warm-up's stream has no prompts left apart from the "
                    f"{len(held_out)} held-out ones; lower eval_size"
                )
            out = make(alternative(index, attempt))
        return out

    return draw


# ---------------------------------------------------------------------------------------------
# Built-in: addition with a digits knob (heterogeneous difficulty, a hard tail)
# ---------------------------------------------------------------------------------------------


def _addition(spec: str, knobs: dict[str, Scalar]) -> Task:
    """``addition``: ``a+b=``, each operand with a uniform number of digits in [min, max].

    Knobs: ``min_digits`` (1), ``max_digits`` (8), ``reverse`` (true: the answer's digits are
    written least significant first, which a small model learns far more easily), ``size``
    (1000 training prompts, at most a million), ``eval_size`` (200 held-out prompts, at most
    100,000), ``seed`` (0, the dataset seed). Each split is its own random stream; the held-out
    prompts are distinct and apart from the training ones (:func:`held_out_indices`), and the
    SFT warm-up's stream of a million items redraws any item whose prompt is held out.
    """
    k = dict(knobs)
    lo = _int_knob(k, "min_digits", 1, 1, 18, spec)
    hi = _int_knob(k, "max_digits", 8, 1, 18, spec)
    size = _int_knob(k, "size", 1000, 1, 10**6, spec)
    eval_size = _int_knob(k, "eval_size", 200, 1, 10**5, spec)
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

    canonical = _canonical("addition", knobs)
    train = Split(size, functools.partial(_addition_item, seed, lo, hi, reverse, 0), _exact)
    held_out = _addition_held_out(canonical, seed, lo, hi, reverse, size, eval_size)
    candidates = functools.partial(_addition_item, seed, lo, hi, reverse, 1)
    held_out_prompts = {candidates(i)[0].prompt for i in held_out}
    sft = _avoiding(
        functools.partial(_addition_item, seed, lo, hi, reverse, 2),
        held_out_prompts,
        lambda index, attempt: attempt * 10**6 + index,  # fresh draws beyond the stream
        canonical,
    )
    return Task(
        spec=canonical,
        train=train,
        eval=Split(eval_size, lambda i: candidates(held_out[i]), _exact),
        sft=Split(10**6, sft, _exact, cache=False),
        max_answer_chars=hi + 1,
    )


def _addition_item(
    seed: int, lo: int, hi: int, reverse: bool, split: int, index: int
) -> tuple[Item, str]:
    rng = np.random.default_rng([seed, split, index])
    da, db = (int(d) for d in rng.integers(lo, hi + 1, size=2))
    a, b = (int(rng.integers(0, 10**d)) for d in (da, db))
    answer = str(a + b)[::-1] if reverse else str(a + b)
    return Item(prompt=f"{a}+{b}=", answer=answer, level=max(da, db)), answer


def _exact(answer: str, text: str) -> bool:
    return text.strip() == answer


@functools.lru_cache(maxsize=32)
def _addition_held_out(
    spec: str, seed: int, lo: int, hi: int, reverse: bool, size: int, eval_size: int
) -> tuple[int, ...]:
    """The held-out split's indices into its candidate stream (cached: a task is loaded often)."""
    train = {_addition_item(seed, lo, hi, reverse, 0, i)[0].prompt for i in range(size)}

    def candidate(index: int) -> Item:
        return _addition_item(seed, lo, hi, reverse, 1, index)[0]

    return tuple(held_out_indices(candidate, eval_size, train, spec=spec))


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


#: Seed offsets of the held-out candidates and of the warm-up's stream: reasoning-gym seeds
#: item ``i`` of a dataset with ``seed + i``, so these keep the three streams' seeds apart for
#: any training split of up to ``size <= 10**9`` items.
_RG_EVAL_OFFSET = 1_000_000_007
_RG_SFT_OFFSET = 1_100_000_009
_RG_SFT_SIZE = 100_000


def _reasoning_gym(name: str, spec: str, knobs: dict[str, Scalar]) -> Task:
    import reasoning_gym

    k = dict(knobs)
    size = _int_knob(k, "size", 10_000, 1, 10**6, spec)
    eval_size = _int_knob(k, "eval_size", 200, 1, 10**5, spec)
    seed = _int_knob(k, "seed", 1, 0, 2**31 - 1, spec)
    try:
        train_ds = reasoning_gym.create_dataset(name, seed=seed, size=size, **k)
        pool_ds = reasoning_gym.create_dataset(
            name, seed=seed + _RG_EVAL_OFFSET, size=11 * eval_size + 10_000, **k
        )
        sft_ds = reasoning_gym.create_dataset(
            name, seed=seed + _RG_SFT_OFFSET, size=_RG_SFT_SIZE, **k
        )
        probe = pool_ds[0]
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

    canonical = _canonical(name, knobs)
    train = Split(size, functools.partial(make, train_ds), score)
    banned = {train.item(i).prompt for i in range(size)}
    held_out = held_out_indices(lambda i: make(pool_ds, i)[0], eval_size, banned, spec=canonical)
    held_out_prompts = {make(pool_ds, i)[0].prompt for i in held_out}
    sft = _avoiding(
        functools.partial(make, sft_ds),
        held_out_prompts,
        lambda index, attempt: (index + 7919 * attempt) % _RG_SFT_SIZE,  # another item
        canonical,
    )
    task = Task(
        spec=canonical,
        train=train,
        eval=Split(eval_size, lambda i: make(pool_ds, held_out[i]), score),
        sft=Split(_RG_SFT_SIZE, sft, score, cache=False),
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
