"""``python -m dp2o_cli`` runs the same CLI as the ``dp2o`` script."""

from dp2o_cli.app import main

main()
