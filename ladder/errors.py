"""Errors that mean "bad input": the CLI prints them without a traceback and exits 2."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One problem in a user's file, pointing at where it is."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.file and self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}" if where else self.message


@dataclass
class InputError(Exception):
    """Bad input from the user (a file, a flag, a ladder): every problem found, at once."""

    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def single(cls, message: str, file: str | None = None, line: int | None = None,
               column: int | None = None) -> "InputError":
        return cls([Problem(message, file, line, column)])

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
