"""Reading aenet's text input files strictly: meaningful lines with their numbers, Fortran numbers, ``key=value``.

aenet skips blank lines and lines whose first character is ``!``, ``#`` or ``%``, and its list-directed reads ignore
whatever follows the values they expect (the documented ``O  -432.503149303  ! eV``). Here trailing text is accepted
only when it starts like a comment (``!``, ``#``, ``%`` or ``|``, as in aenet's own examples), so a typo is an error
naming the file and line instead of a silently ignored value.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..errors import AenetFormatError

#: A real number as Fortran writes it: optional sign, digits with an optional point, exponent with e, E, d or D.
_REAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_COMMENT_STARTS = ("!", "#", "%")
_TRAILING_COMMENT_STARTS = (*_COMMENT_STARTS, "|")
#: Largest input file read (bytes): aenet inputs are kilobytes; a huge file is a mistake, not an input.
MAX_FILE_SIZE = 64 << 20


def read_text(path: Path, what: str) -> str:
    """The text of ``path``. :raises AenetFormatError: missing, not a file, too large, or not text."""
    if not path.is_file():
        raise AenetFormatError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    size = path.stat().st_size
    if size > MAX_FILE_SIZE:
        raise AenetFormatError(f"{what} {path} is {size} bytes, more than any aenet input file ({MAX_FILE_SIZE})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AenetFormatError(f"{what} {path} is not a text file ({exc.reason} at byte {exc.start})") from exc


def is_comment(text: str) -> bool:
    """Blank, or a comment line in aenet's sense."""
    stripped = text.strip()
    return not stripped or stripped.startswith(_COMMENT_STARTS)


class Lines:
    """The meaningful lines of an aenet input file, consumed in order, each with its 1-based line number.

    :param path: the file (named in every error).
    :param what: what the file is, for messages ("fingerprint setup", "generate.in").
    """

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self.raw = read_text(self.path, what).splitlines()
        self.lines = [(number, text.strip()) for number, text in enumerate(self.raw, 1) if not is_comment(text)]
        self.position = 0

    def error(self, number: int | None, message: str) -> AenetFormatError:
        where = f"{self.path}, line {number}" if number is not None else str(self.path)
        return AenetFormatError(f"{where}: {message}")

    def at_end(self) -> bool:
        return self.position >= len(self.lines)

    def peek(self) -> tuple[int, str]:
        return self.lines[self.position]

    def next(self, expected: str) -> tuple[int, str]:
        """The next meaningful line; :raises AenetFormatError: the file ended before ``expected``."""
        if self.at_end():
            last = self.lines[-1][0] if self.lines else None
            raise self.error(last, f"the file ends where {expected} was expected")
        line = self.lines[self.position]
        self.position += 1
        return line

    def tokens(self, number: int, text: str, count: int | None, what: str) -> list[str]:
        """The whitespace-separated tokens of a line up to a trailing comment; exactly ``count`` of them if given."""
        tokens = text.split()
        for index, token in enumerate(tokens):
            if index and token.startswith(_TRAILING_COMMENT_STARTS):
                tokens = tokens[:index]
                break
        if count is not None and len(tokens) != count:
            raise self.error(number, f"expected {what} ({count} item{'s' if count != 1 else ''}), got {text!r}")
        return tokens

    def real(self, number: int, token: str, what: str) -> float:
        return parse_real(token, lambda message: self.error(number, f"{what}: {message}"))

    def integer(self, number: int, token: str, what: str, minimum: int | None = None) -> int:
        if not _INTEGER.fullmatch(token):
            raise self.error(number, f"{what}: expected an integer, got {token!r}")
        value = int(token)
        if minimum is not None and value < minimum:
            raise self.error(number, f"{what}: expected at least {minimum}, got {value}")
        return value

    def key_values(self, number: int, text: str, what: str) -> dict[str, str]:
        """``key=value`` items of a line (spaces around ``=`` allowed), keys lower-cased; repeated keys and items
        that are not ``key=value`` are errors."""
        items = self.tokens(number, re.sub(r"\s*=\s*", "=", text.strip()), None, what)
        values = {}
        for item in items:
            key, sign, value = item.partition("=")
            if not sign or not key or not value:
                raise self.error(number, f"{what}: expected key=value items, got {item!r}")
            if key.lower() in values:
                raise self.error(number, f"{what}: {key} is given twice")
            values[key.lower()] = value
        return values


def parse_real(token: str, error) -> float:
    """A finite real in Fortran or Python notation (``0.75d0``, ``-1.2E-3``); ``error(message)`` builds the
    exception for anything else (nan, inf, words, Python's ``1_000``)."""
    if not _REAL.fullmatch(token):
        raise error(f"expected a number, got {token!r}")
    value = float(token.replace("d", "e").replace("D", "e"))
    if not math.isfinite(value):
        raise error(f"{token!r} is out of range")
    return value
