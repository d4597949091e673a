"""State dicts to files and back: flat ``.npz`` archives, atomic writes, config checks, RNG state."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import numpy as np

from gdro_core._validation import fail, type_fail
from gdro_core.files import atomic_write_bytes

#: The state-dict format written now, and every format still read.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_SEP = "/"


def configs_json(configs: dict[str, Any]) -> str:
    """Several named configs as one canonical JSON object."""
    return json.dumps({k: dataclasses.asdict(v) for k, v in configs.items()}, sort_keys=True)


def migrate_config(saved: Any) -> Any:
    """A saved config mapping in today's terms: a classifier section written before
    ``ClassifierConfig.outcome`` existed used ``"any"`` (or ``"pass@k"`` when ``k`` was set).

    Examples:
        >>> migrate_config({"classifier": {"k": None}})["classifier"]["outcome"]
        'any'
        >>> migrate_config({"classifier": {"k": 2}})["classifier"]["outcome"]
        'pass@k'
    """
    if isinstance(saved, dict) and isinstance(saved.get("classifier"), dict):
        section = saved["classifier"]
        if "outcome" not in section:
            k = section.get("k")
            saved = dict(saved, classifier=dict(section, outcome="any" if k is None else "pass@k"))
    return saved


def check_same_config(d: dict[str, Any], configs: dict[str, Any], num_prompts: int) -> int:
    """Raise ``ValueError`` naming every field where the saved state differs from ``configs``.

    Returns the state's format version.
    """
    if not isinstance(d, dict):
        raise type_fail("state", "a dict from state_dict()", d)
    version = _scalar(d.get("format_version"))
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise fail("state['format_version']", f"one of {list(READABLE_VERSIONS)}", version)
    saved_n = _scalar(d.get("num_prompts"))
    diffs: list[str] = []
    if saved_n != num_prompts:
        diffs.append(f"num_prompts (saved {saved_n}, here {num_prompts})")
    raw = _scalar(d.get("config"))
    try:
        saved = json.loads(str(raw))
    except (TypeError, ValueError) as exc:
        raise fail("state['config']", "the JSON string written by state_dict()", raw) from exc
    if not isinstance(saved, dict):
        raise fail("state['config']", "a JSON object of named configs", raw)
    saved = migrate_config(saved)
    here = json.loads(configs_json(configs))
    for section in sorted(set(saved) | set(here)):
        a, b = saved.get(section, {}), here.get(section, {})
        cls = type(configs[section]) if section in configs else None
        if cls is not None and isinstance(a, dict):
            try:  # compare stored configs after deriving their defaults
                a = json.loads(configs_json({section: cls(**_tuples(a))}))[section]
            except (TypeError, ValueError) as exc:
                raise fail("state['config']", f"a valid {cls.__name__}", a) from exc
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                name = f"{section}.{field}" if section else field
                diffs.append(f"{name} (saved {a.get(field)!r}, here {b.get(field)!r})")
    if diffs:
        raise ValueError(
            "state was saved with a different configuration; fields that differ: "
            + "; ".join(diffs)
        )
    return int(version)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    return v


def rng_state_json(rng: np.random.Generator) -> str:
    """The generator's full bit-generator state as JSON (128-bit words as plain integers)."""
    return json.dumps(rng.bit_generator.state, sort_keys=True)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> flat ``{"a/b": array}``; strings become 0-d unicode arrays (never objects)."""
    out: dict[str, np.ndarray] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + _SEP))
        else:
            arr = np.asarray(v)
            if arr.dtype == object:
                raise type_fail(key, "an array, number or string (no Python objects)", v)
            out[key] = arr
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of ``flatten``; 0-d arrays come back as Python scalars and strings."""
    out: dict[str, Any] = {}
    for key, arr in flat.items():
        node = out
        *parents, leaf = key.split(_SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr.item() if arr.ndim == 0 else arr
    return out


def save_npz(path: str | os.PathLike[str], d: dict[str, Any]) -> None:
    """Save a nested state dict as an uncompressed ``.npz`` that ``np.load(allow_pickle=False)`` reads."""
    buf = io.BytesIO()
    np.savez(buf, **flatten(d))  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a file written by ``save_npz`` back into a nested dict."""
    with np.load(path, allow_pickle=False) as z:
        return unflatten({k: z[k] for k in z.files})
