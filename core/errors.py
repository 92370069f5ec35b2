"""The one base class of the project's own errors.

A `UserError` is a problem with what the user gave (a file, a store, an option), never a bug: the
CLI prints it as one line `Error: <message>` and exits 1, without a traceback. Its message names
the file and line, or the store, group and array, or the video. Any other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input or an impossible request; the message is complete and user-facing."""
