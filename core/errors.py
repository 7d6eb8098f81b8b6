"""Every error the core raises on purpose, in one module that every sub-package imports.

Each message says what went wrong and what to do; the CLI prints it, the app translates
its kind into the user's language (ui/errors.py), the HTTP API returns it as JSON with a status
chosen by its type (ui/http_api.py), never by its text. `kind` is the name a client sees.
"""
from __future__ import annotations

__all__ = ["WorkbenchError", "ModelUnavailableError", "UnknownModelError", "ImageError", "LibraryError",
           "ModelMismatchError", "NotFoundError", "QueryError", "LabelError", "DatasetError", "PermissionDenied", "QuotaError",
           "SafetyError", "QueryRefused", "EXPECTED_ERRORS"]


class WorkbenchError(Exception):
    """Base of the errors below (a caller may catch them all at once)."""

    @classmethod
    def kind(cls) -> str:
        """The error's name for API clients (JSON "kind"): its class name unless it says otherwise."""
        return cls.__dict__.get("public_kind", cls.__name__)


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


class NotFoundError(LibraryError):
    """No stored image has this id (or its file is gone). The JSON API answers 404; clients
    have always seen it as a LibraryError, so that stays its kind."""
    public_kind = "LibraryError"


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


class SafetyError(WorkbenchError, ValueError):
    """The safety filter cannot be set up as asked (a concept list, a classifier head); the message
    says which file and why."""


class QueryRefused(QueryError):
    """A search the class's safety policy does not run (a blocked word, or a query nearest an unsafe
    concept). Its message is neutral on purpose: it names no rule and repeats nothing typed."""


# What a front end reports to the user as a message rather than a crash.
EXPECTED_ERRORS = (WorkbenchError,)
