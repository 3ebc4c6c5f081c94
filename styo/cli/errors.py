"""The error of the ``styo`` command that is the user's to fix: exit code 2, one plain line."""


class UsageError(Exception):
    """Bad input from the user: exit code 2."""
