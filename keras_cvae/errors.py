"""Errors the command line turns into one line and an exit status (no TensorFlow import here)."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; nothing after the last good epoch was written."""


class DataError(ValueError):
    """Data is missing, corrupt or of the wrong shape; the message names the file and the fix."""


class SlowPathWarning(UserWarning):
    """A setting runs far slower on this machine than its alternative; the message says which."""
