"""The ``dp2o`` command line (Typer + rich), installed as ``dp2o_cli``; one module per command group."""
