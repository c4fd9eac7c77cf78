"""The one exception type for mistakes a user can fix (bad params, missing files, ...).

The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""

import sys


class AimfairError(Exception):
    """A user-facing error. The message names the problem and how to fix it."""


def notice(message: str) -> None:
    """Tell the user about something worth knowing that stops nothing, as one clean line on stderr.

    Not warnings.warn: Python prints a warning with its source line, and a stage's log should read as prose.
    """
    print(f"aimfair: {message}", file=sys.stderr, flush=True)
