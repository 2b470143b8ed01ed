"""The one error type users see.

Anything raised as :class:`InputError` is bad input (a file, a name, a value): the CLI prints its
message on one line and exits with code 2, with no traceback. The message names the input.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. ``str(err)`` must name the file/value and the problem."""

    def __init__(self, where: object, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # pickles whole (worker processes, Ray tasks) despite the two-argument __init__
        return type(self), (self.where, self.problem)
