"""The ``gdro`` command line: ``gdro train``, ``gdro simulate``, ``gdro report``.

It sits above the simulator (``gdro_lab``) and the adapters (``gdro_torch``); each subcommand is
imported only when used, so ``gdro simulate`` never imports torch and ``gdro --help`` starts fast.
The controller's flags are generated from the core's configs (``gdro_cli.flags``); every figure
is drawn here (``gdro_cli.figures``, ``gdro_cli.report``) from one reader (``gdro_cli.runs``).
"""

# Nothing is exported here: the command is gdro_cli.main.main; each subcommand is a module.
__all__: list[str] = []
