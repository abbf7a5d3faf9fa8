"""Exceptions raised by the task suite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class UnknownTaskError(KeyError, ValueError):
    """Raised when a task name is unknown: not in the suite's registry, or without an embedding
    in a learngene checkpoint. ``known`` lists the names that would have worked.

    Subclasses both ``KeyError`` (it is a failed look-up by name) and ``ValueError`` (the
    caller passed a bad argument), so either ``except`` clause catches it.
    """

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        message = f"unknown task {name!r}; known tasks: {', '.join(self.known) or 'none'}"
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError's own __str__ would wrap the message in quotes.
        return self.message


class TaskSourceMissingError(RuntimeError):
    """Raised when the files a task is built from (a data set, fonts) are not on this machine.

    ``apt_packages`` names the Debian packages that provide them; the message says how to
    install them.
    """

    def __init__(self, what: str, searched: Sequence[str], apt_packages: Sequence[str]) -> None:
        self.apt_packages = tuple(apt_packages)
        self.searched = tuple(searched)
        install = f"apt-get install -y {' '.join(self.apt_packages)}"
        where = ", ".join(self.searched) if self.searched else "(nowhere)"
        super().__init__(f"{what} not found (searched: {where}); install it with `{install}`")
