"""What the command modules of the CLI share: the ``-c/--config`` option and loading it; capture
on a command's runner (:func:`add_capture`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from crossfade.config import Settings, load_settings

if TYPE_CHECKING:
    from crossfade.capture.service import CaptureService
    from crossfade.ops.runner import Runner, Service

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


def add_capture(runner: Runner, cap: CaptureService, settings: Settings) -> Service:
    """``cap`` as ``runner``'s service "capture" (errors counted, readiness registered), and the
    runner's stop bounded by ``capture.stop_timeout_s``: where capture runs a stop may hang on
    Debezium's engine (``crossfade capture``, ``run``, ``fallback start``)."""
    from crossfade import metrics
    from crossfade.ops import probes

    runner.stop_timeout = settings.capture.stop_timeout_s
    s = runner.add(
        "capture", metrics.counting_errors("capture", cap.run), cap.stop, cap.stop_waits_on
    )
    probes.watch_capture(cap, settings)
    return s
