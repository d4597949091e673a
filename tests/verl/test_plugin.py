"""The verl.plugins entry point: declared in package metadata and loaded by ``import verl``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

_PROBE = """
import json, sys
import verl  # loads every verl.plugins entry point
from verl.trainer.ppo.v1 import trainer_base  # imported after the plugin: binds the routed name
plugin = sys.modules.get("gdro_verl.plugin")
print(json.dumps({
    "loaded": bool(plugin is not None and plugin.LOADED),
    "routed": hasattr(trainer_base.create_rl_sampler, "__gdro_wrapped__"),
    "core_free": "gdro_core" not in sys.modules,
}))
"""


def _probe() -> dict[str, bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    out = subprocess.run(  # verl's default plugin policy ("auto")
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_entry_point_is_declared_in_package_metadata() -> None:
    (ep,) = [ep for ep in entry_points(group="verl.plugins") if ep.name == "gdro"]
    assert ep.value == "gdro_verl.plugin"
    module = ep.load()
    assert module.LOADED


def test_import_verl_loads_the_plugin_in_a_fresh_process() -> None:
    """verl swallows plugin import errors, so check that the plugin actually ran."""
    assert _probe() == {"loaded": True, "routed": True, "core_free": True}
