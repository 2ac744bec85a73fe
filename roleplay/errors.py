"""The project's error types.

Every error a user should see is a `RoleplayError` whose message is one line that says
what went wrong, where (file, field, line) and how to fix it. The CLI prints it without a
traceback and exits with code 2. Anything else escaping is a bug.
"""
from __future__ import annotations

from pathlib import Path


class RoleplayError(Exception):
    """Seen by users: a one-line, actionable message (CLI exit code 2)."""


class CardError(RoleplayError):
    """A character card (YAML, JSON, PNG, zip, ChatHaruhi folder) is malformed or unsafe.

    Formats as ``file:line: field: message`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | Path | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.line = line
        self.reason = message
        where = ""
        if self.file:
            where = self.file + (f":{line}" if line else "") + ": "
        elif line:
            where = f"line {line}: "
        if field:
            where += f"{field}: "
        super().__init__(where + message)


class ConfigError(RoleplayError):
    """A setting, option or command-line argument is invalid."""


class ContextOverflow(ConfigError):
    """The prompt alone fills the model's context: no room is left for a reply."""


class StoreError(RoleplayError):
    """The vector store (Chroma) or the sessions database cannot be used."""


class BackendError(RoleplayError):
    """A generation backend failed to load or to generate."""


class SessionError(RoleplayError):
    """A chat session operation is invalid (unknown id, no such message…)."""


def invalid(exc: Exception, prefix: str, *, error: type[RoleplayError] = ConfigError,
            default_field: str = "value", show_input: bool = False) -> RoleplayError:
    """Our one-line error for pydantic's first validation error: ``{prefix}{field}: {message}``.

    The one place a `pydantic.ValidationError` becomes an error users see (settings, options,
    sampling parameters, session settings, evaluation configs), so they all read alike.

    >>> from pydantic import BaseModel, ValidationError
    >>> class M(BaseModel): n: int
    >>> try: M(n="x")
    ... except ValidationError as e: print(invalid(e, "setting "))
    setting n: Input should be a valid integer, unable to parse string as an integer
    """
    err = exc.errors()[0]  # type: ignore[attr-defined]
    field = ".".join(str(p) for p in err.get("loc", ())) or default_field
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    got = f" (got {err.get('input')!r})" if show_input and "input" in err else ""
    return error(f"{prefix}{field}: {message}{got}")
