"""What every command module of the CLI shares: the ``-c/--config`` option and loading it."""

from __future__ import annotations

import click

from crossfade.config import Settings, load_settings

config_option = click.option(
    "-c",
    "--config",
    "config",
    envvar="CROSSFADE_CONFIG",
    type=click.Path(dir_okay=False),
    help="YAML config file (or CROSSFADE_CONFIG).",
)


def load_config(config: str | None) -> Settings:
    """The validated settings of ``config`` (a ConfigError names what is wrong)."""
    return load_settings(config)
