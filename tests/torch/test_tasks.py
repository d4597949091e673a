"""Tasks: spec parsing, stable ids, difficulty levels and exact rewards."""

from __future__ import annotations

import pytest

from gdro_torch.tasks import load_task, parse_task_spec


def test_parse_task_spec_types_and_errors() -> None:
    assert parse_task_spec("chain_sum:min_digits=1,max_digits=4,allow_negation=false") == (
        "chain_sum",
        {"min_digits": 1, "max_digits": 4, "allow_negation": False},
    )
    assert parse_task_spec("addition") == ("addition", {})
    for bad, msg in [
        ("", "malformed"),
        ("addition:max_digits", "not key=value"),
        ("addition:a=1,a=2", "given twice"),
        (":x=1", "malformed"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_task_spec(bad)


def test_addition_is_deterministic_graded_and_exact() -> None:
    task = load_task("addition:min_digits=1,max_digits=6,size=300")
    again = load_task("addition:max_digits=6,size=300,min_digits=1")
    assert task.spec == again.spec == "addition:max_digits=6,min_digits=1,size=300"
    items = [task.train.item(i) for i in range(300)]
    assert items == [again.train.item(i) for i in range(300)]  # a prompt id is a stable index
    assert {it.level for it in items} == set(range(1, 7))
    it = items[0]
    a, b = (int(x) for x in it.prompt.rstrip("=").split("+"))
    assert it.answer == str(a + b)[::-1]  # reversed digits by default
    assert task.train.reward(0, it.answer) == 1.0
    assert task.train.reward(0, it.answer + "1") == 0.0
    assert task.eval.item(0) != task.train.item(0)  # a different stream
    assert task.sft.item(0) not in (task.train.item(0), task.eval.item(0))  # and the SFT one
    assert len(task.sft) == 10**6 and len(load_task("addition").train) == 1000
    plain = load_task("addition:reverse=false,size=10")
    x = plain.train.item(3)
    assert x.answer == str(sum(int(v) for v in x.prompt.rstrip("=").split("+")))


def test_addition_knob_errors_name_the_knob() -> None:
    with pytest.raises(ValueError, match="max_digits must be an integer in"):
        load_task("addition:max_digits=0")
    with pytest.raises(ValueError, match="min_digits must be <= max_digits"):
        load_task("addition:min_digits=5,max_digits=2")
    with pytest.raises(ValueError, match="unknown knob"):
        load_task("addition:digits=3")
    with pytest.raises(ValueError, match="unknown task 'no_such_task'"):
        load_task("no_such_task")


def test_reasoning_gym_task_scores_exactly() -> None:
    task = load_task("chain_sum:min_digits=1,max_digits=2,size=50,eval_size=10")
    item = task.train.item(0)
    assert item.prompt.endswith("=") and " " not in item.prompt  # compact expression
    assert task.train.reward(0, item.answer) == 1.0
    # reasoning-gym gives partial credit when the answer is a substring; we give 0
    assert task.train.reward(0, "1" + item.answer) == 0.0
    assert task.train.item(0) == load_task(
        "chain_sum:min_digits=1,max_digits=2,size=50"
    ).train.item(0)
    assert 1 <= item.level <= 2
    assert task.max_answer_chars >= len(item.answer)
    with pytest.raises(ValueError, match="reasoning-gym rejected"):
        load_task("chain_sum:min_digits=3,max_digits=1")
