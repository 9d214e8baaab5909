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
    # the mapping engine installs the check the mapping model runs at load (transform names and
    # arguments); imported here, not at the top, so commands without a mapping start fast
    import crossfade.mapping  # noqa: F401

    return load_settings(config)
