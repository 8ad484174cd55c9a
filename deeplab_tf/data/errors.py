"""The error type for problems in a user's data files."""


class DataError(ValueError):
    """A problem with the user's data (not a bug): the message says which file and what to do."""
