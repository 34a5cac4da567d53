"""The ``stcn`` sub-commands, one module each, above every library package (README, "Layout").

Each module exposes ``register(subparsers)``: it declares the command's options and reads them into
calls of the library (:mod:`stcn.cli` registers them in :data:`stcn.cli.COMMAND_MODULES`' order). A
command module may import any package; no library module imports a command.
"""
