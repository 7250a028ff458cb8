"""What the root command passes to every subcommand: global options and a lazy plugin manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports every interface; a command that needs it pays for it
    from dp2o_core.registry import PluginManager


@dataclass
class CliState:
    """Global options of ``dp2o`` (``-p MODULE``) and the plugin manager built from them."""

    plugin_modules: list[str] = field(default_factory=list)

    @cached_property
    def manager(self) -> PluginManager:
        """Built-ins, installed plugins and ``-p`` modules, loaded on first use."""
        from dp2o_core.registry import PluginManager

        return PluginManager(modules=self.plugin_modules)
