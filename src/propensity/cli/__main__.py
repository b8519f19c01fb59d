"""``python -m propensity.cli``: the same as the ``propensity`` command."""

from propensity.cli.app import main

main()
