"""The ``propensity`` command: :mod:`propensity.cli.app` composes one Typer sub-app per command module."""
