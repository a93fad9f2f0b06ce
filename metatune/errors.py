"""The one exception type the package raises for bad input or a failed solve."""


class MetatuneError(ValueError):
    """Bad input or a numerical failure, with a message that names the problem."""
