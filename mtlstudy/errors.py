"""The one base class of bad input: a profile, a data file, a model, a task, the cluster.

The CLI prints a UserError as one line naming the field or file and exits 2. Any other exception
is a bug in mtlstudy (or in a library under it): it shows its traceback and exits 1.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the person running mtlstudy can fix: the message says what and where."""


def validation_message(error, where: str = "", what: str = "key") -> str:
    """One line from a pydantic ValidationError: its first error, named by its dotted location."""
    err = error.errors()[0]
    key = ".".join(str(x) for x in err["loc"]) or "(top level)"
    msg = err["msg"].replace("Extra inputs are not permitted", "unknown key").removeprefix("Value error, ")
    return f"{where}{what} '{key}': {msg}"


class BadValue(UserError, ValueError):
    """A value given on the command line or to a notebook that cannot be used (a ValueError too)."""


class StudyNotFound(UserError, FileNotFoundError):
    """No finished study (results.csv) where one was asked for."""


class TrainingError(UserError, RuntimeError):
    """A run that cannot train as asked: its device, precision, inputs, or a non-finite loss."""
