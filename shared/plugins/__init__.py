"""Installed plugins: third-party sources, transform steps and destinations (see ``registry``)."""

from shared.plugins.registry import (
    GROUPS,
    InstalledPlugins,
    PluginFailure,
    installed,
    load_plugins,
    report_plugins,
)

__all__ = ["GROUPS", "InstalledPlugins", "PluginFailure", "installed", "load_plugins", "report_plugins"]
