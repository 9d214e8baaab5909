"""The engine's check of a mapping at load, installed into the mapping language's model
(:func:`crossfade.config.mapping.install_check`) when ``crossfade.mapping`` is imported."""

from __future__ import annotations

from crossfade.config.mapping import MappingConfig
from crossfade.errors import ConfigError
from crossfade.mapping.engine import compile_mapping
from crossfade.mapping.transforms import validating


def check_mapping(config: MappingConfig) -> list[str]:
    """Compile ``config`` without running user code (:func:`validating`): every transform name
    resolves, every built-in's argument fits. Returns the ``module:function`` paths of the user
    transforms it names; raises ValueError (the engine's one line) for anything that does not
    compile."""
    try:
        with validating() as seen:
            compile_mapping(config)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return seen
