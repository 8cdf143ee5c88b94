"""Errors the harness raises for bad user input (shown without a traceback by the CLI)."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the value and the valid choices."""


class InputError(ValueError):
    """A user-supplied input (checkpoint, run id, dataset, cache...) cannot be used."""
