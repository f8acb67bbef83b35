"""Errors that the command line reports as one sentence and exit code 2."""

from __future__ import annotations


class VetsegError(Exception):
    """A problem with the user's input or files, worded for the user.

    The message is one sentence that names the file and the problem. The CLI prints it
    without a traceback and exits with code 2; nothing is written before it is raised.
    """


class InputError(VetsegError):
    """A file that is missing, unreadable, of an unknown kind, or not what was expected."""


class GridMismatchError(InputError):
    """An image and its label map do not share one voxel grid."""


class LabelMappingError(InputError):
    """A label map holds ids that the organ mapping in use does not know."""


class StaleVersionError(InputError):
    """A correction started from a version that is no longer the newest one of its case."""


class ModelFileError(VetsegError):
    """A model file that vetseg will not load (wrong kind, missing parts, mismatched shapes)."""
