"""verl entry point (``[project.entry-points."verl.plugins"] gdro = "gdro_verl.plugin"``).

``import verl`` loads every ``verl.plugins`` entry point, in the driver, the TaskRunner actor and
every worker, so this module runs early everywhere without a custom launch script. It only routes
verl's ``create_rl_sampler`` to gdro for gdro train datasets (a no-op for everything else); the
trainer hooks are installed when a gdro train dataset is built (see :mod:`gdro_verl.hooks`).

verl swallows exceptions raised while loading a plugin (logged at DEBUG), so :data:`LOADED` is set
last: ``gdro_verl.plugin.LOADED`` is True only when loading succeeded.
"""

from __future__ import annotations

from gdro_verl import _compat, hooks

# No functions or classes: importing the module is what it does. LOADED is read by users (docs).
__all__ = ["LOADED"]

LOADED = False

hooks.install_sampler_factory()
if not _compat.is_tested_version():  # pragma: no cover - depends on the installed verl
    import logging

    logging.getLogger(__name__).warning(
        "gdro_verl is tested with verl %s; found verl %s",
        ", ".join(".".join(map(str, v)) for v in _compat.TESTED_VERL),
        ".".join(map(str, _compat.verl_version())),
    )
LOADED = True
