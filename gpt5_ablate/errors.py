"""Errors the harness raises on purpose. The CLI shows them as one ``error: ...`` paragraph,
without a traceback, and turns them into exit statuses; the sweep callback matches them by class.
"""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the value and the valid choices."""


class InputError(ValueError):
    """A user-supplied input (checkpoint, run id, dataset, cache...) cannot be used."""


class CheckpointError(InputError):
    """No intact checkpoint can be resumed (the message names the damaged files and options)."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was saved and the MLflow run marked KILLED."""


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN/Inf and trainer.on_nonfinite=stop."""


# Errors already explained to the user: reported in one line, exit status 2 (130 for a stop).
REPORTED_ERRORS = (ConfigError, InputError, NonFiniteLossError, TrainingInterrupted)


def exit_status(error: BaseException) -> int:
    return 130 if isinstance(error, TrainingInterrupted | KeyboardInterrupt) else 2
