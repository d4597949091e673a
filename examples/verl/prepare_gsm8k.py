"""Write GSM8K as verl-format parquet files (train.parquet, test.parquet).

Usage::

    python examples/verl/prepare_gsm8k.py --out ~/data/gsm8k
    python examples/verl/prepare_gsm8k.py --out /tmp/gsm8k-32 --train-limit 32 --test-limit 64

Rows follow verl's preprocessing convention: a chat ``prompt``, ``data_source="openai/gsm8k"``
(so verl's built-in rule scorer grades them: 1.0 when the number after ``####`` is right),
``reward_model.ground_truth`` and ``extra_info``. gdro does not need an id column: a prompt's
stable id is its row position in the train file.
"""

from __future__ import annotations

import argparse
import os
import re

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def extract_answer(solution: str) -> str:
    """The number after GSM8K's ``####`` marker, without thousands separators."""
    match = re.search(r"#### (\-?[0-9\.\,]+)", solution)
    if match is None:
        raise ValueError(f"no '#### <answer>' in solution: {solution[-80:]!r}")
    return match.group(1).replace(",", "")


def to_verl(split: str, limit: int | None = None):  # noqa: ANN201 - a datasets.Dataset
    """One GSM8K split in verl's row format (its first ``limit`` rows when given)."""
    import datasets

    raw = datasets.load_dataset("openai/gsm8k", "main", split=split)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))

    def convert(example: dict, idx: int) -> dict:
        return {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"{example['question']} {INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": extract_answer(example["answer"])},
            "extra_info": {"split": split, "index": idx},
        }

    return raw.map(convert, with_indices=True, remove_columns=raw.column_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.expanduser("~/data/gsm8k"), help="output folder")
    parser.add_argument("--train-limit", type=int, default=None, help="keep the first N train rows")
    parser.add_argument("--test-limit", type=int, default=None, help="keep the first N test rows")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        path = os.path.join(args.out, f"{split}.parquet")
        to_verl(split, limit).to_parquet(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
