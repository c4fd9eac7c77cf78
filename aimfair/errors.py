"""The one exception type for mistakes a user can fix (bad params, missing files, ...).

The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class AimfairError(Exception):
    """A user-facing error. The message names the problem and how to fix it."""
