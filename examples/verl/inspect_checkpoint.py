"""Print (and optionally check) the gdro controller state saved in a verl checkpoint.

Usage::

    python examples/verl/inspect_checkpoint.py checkpoints/gdro_verl/<experiment>/global_step_4
    python examples/verl/inspect_checkpoint.py <folder or data.pt> --expect-step 4

verl saves ``train_dataloader.state_dict()`` as ``global_step_N/data.pt``; gdro's sampler state,
and in it the controller's, is nested inside. With verl's sync trainers gdro feeds each step back
before verl checkpoints it, so the controller of ``global_step_N`` has completed exactly N plans
(``controller_step``). With DAPO refills or the async modes, plans and optimiser steps do not
line up one to one, and plans may be in flight at a checkpoint (``plans_in_flight``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def load_gdro_state(path: str) -> dict[str, Any]:
    """The gdro runtime state inside a checkpoint folder's (or a file's) ``data.pt``."""
    import torch

    from gdro_verl._compat import sampler_state_of

    if os.path.isdir(path):
        path = os.path.join(path, "data.pt")
    state = sampler_state_of(torch.load(path, weights_only=False))
    if state is None:
        raise SystemExit(f"{path}: no gdro sampler state (was the run using gdro_verl?)")
    return dict(state["runtime"])


def summary(runtime_state: dict[str, Any]) -> dict[str, Any]:
    """Plans completed, batch size, bin histogram and the plans in flight of a runtime state."""
    import numpy as np

    controller = runtime_state["controller"]
    bins = np.asarray(controller["classifier"]["bins"])
    flights = runtime_state["flights"]
    return {
        "controller_step": int(controller["step"]),
        "num_prompts": int(runtime_state["num_prompts"]),
        "train_batch_size": int(runtime_state["block_size"]),
        "bin_counts": np.bincount(bins.astype(np.int64)).tolist(),
        "plans_in_flight": len(flights),
        "prompts_handed_out_in_flight": sum(int(f["handed"]) for f in flights.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="global_step_N folder or a data.pt file")
    parser.add_argument(
        "--expect-step",
        type=int,
        default=None,
        help="exit 1 unless the controller completed exactly this many plans",
    )
    args = parser.parse_args(argv)
    info = summary(load_gdro_state(args.path))
    print(json.dumps(info))
    if args.expect_step is not None and info["controller_step"] != args.expect_step:
        print(
            f"expected controller_step {args.expect_step}, found {info['controller_step']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
