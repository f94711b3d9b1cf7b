"""The one exception type users see.

A `UserError` is bad input or a missing prerequisite: the CLI prints its message as a single
line on stderr and exits with code 2. Messages name the offending input and the fix.
"""


class UserError(Exception):
    """Bad input: one line naming the input and how to fix it (exit code 2)."""

    def __init__(self, message: str):
        # Keep it to one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))
