"""The one exception type our commands turn into a one-line ``ERROR:`` message and exit code 1."""


class UserFacingError(Exception):
    """A problem the user can fix (wrong dataset, missing plans, bad input); the message says how."""
