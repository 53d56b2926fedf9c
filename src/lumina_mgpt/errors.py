"""The one exception type for problems a user can fix (bad files, sizes, inputs)."""


class LuminaError(ValueError):
    """A user-facing error whose message is one line naming the thing and the problem."""
