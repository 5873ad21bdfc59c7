"""The one exception type a user sees as a one-line message instead of a traceback."""


class CompeteError(Exception):
    """A problem with the user's input or environment, phrased so they can fix it."""


class DiskFull(CompeteError):
    """The disk (or quota) filled while compete wrote a file; nothing half-written was kept."""
