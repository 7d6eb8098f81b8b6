"""Every error the core raises on purpose, in one module that every sub-package imports.

Each message says what went wrong and what to do; the CLI prints it, the app translates
its kind into the user's language (ui/errors.py), the HTTP API returns it as JSON.
"""
from __future__ import annotations

__all__ = ["WorkbenchError", "ModelUnavailableError", "UnknownModelError", "ImageError", "LibraryError",
           "ModelMismatchError", "QueryError", "LabelError", "DatasetError", "PermissionDenied", "QuotaError",
           "EXPECTED_ERRORS"]


class WorkbenchError(Exception):
    """Base of the errors below (a caller may catch them all at once)."""


class ModelUnavailableError(WorkbenchError, RuntimeError):
    """The model exists in principle but its weights could not be obtained here."""


class UnknownModelError(WorkbenchError, ValueError):
    """The name matches no known model, file or directory."""


class ImageError(WorkbenchError, ValueError):
    """An image that cannot be used; `name` says which, `reason` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class LibraryError(WorkbenchError, RuntimeError):
    """The library cannot do what was asked; the message says why and what to do."""


class ModelMismatchError(LibraryError):
    """The library's features were made by another model; they must never be mixed."""


class QueryError(WorkbenchError, ValueError):
    """A query that cannot be run; the message says what to change."""


class LabelError(WorkbenchError, ValueError):
    """Labels or templates the user gave cannot be used; the message says why."""


class DatasetError(WorkbenchError, ValueError):
    """A dataset on disk cannot be read as asked; the message says which file and what to do."""


class PermissionDenied(WorkbenchError, PermissionError):
    """The caller's role may not do this (e.g. a student deleting an image)."""


class QuotaError(WorkbenchError, RuntimeError):
    """An upload or a library would go over its limit; the message gives the limit."""


# What a front end reports to the user as a message rather than a crash.
EXPECTED_ERRORS = (WorkbenchError,)
