"""The ``gdro`` command line: ``gdro train``, ``gdro simulate``, ``gdro report``.

Each subcommand lives in the package that owns it and is imported only when used, so
``gdro simulate`` never imports torch and ``gdro --help`` starts fast.
"""

# Nothing is exported here: the command is gdro_cli.main.main; each subcommand is a module.
__all__: list[str] = []
