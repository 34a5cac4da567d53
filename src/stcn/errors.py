"""Errors that describe a user's mistake (bad input, missing file): the CLI prints them as one line."""


class UserError(Exception):
    """A problem with what the user gave us (a path, a file, an option).

    The command line prints ``stcn: error: <message>`` and exits with status 2, without a traceback.
    Library callers get an ordinary exception whose message names the problem and where it is.
    """


class CheckpointError(UserError):
    """A checkpoint file that cannot be loaded (missing, truncated, unsafe, wrong keys or shapes)."""


class DataError(UserError):
    """An input video, mask or dataset that is malformed or missing."""
