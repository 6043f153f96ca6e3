"""The errors a user can fix: the CLI prints them as one message, without a traceback."""


class TrainingError(Exception):
    """A problem the user can fix (bad data path, diverged loss, wrong settings)."""


class CheckpointError(TrainingError, ValueError):
    """A file that is not a usable minicnn checkpoint, or one that does not fit the model asked for."""
