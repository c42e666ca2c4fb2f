"""Reading the whitespace-separated index files that ship with CUB and SOP, with precise errors."""

from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple


def read_rows(path: Path, fields: int, header: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, List[str]]]:
    """Yield ``(where, columns)`` per non-blank line, ``where`` being "FILE:LINE" for messages.

    Args:
        path: the text file.
        fields: columns every row must have (ValueError naming file and line otherwise).
        header: if given, the first line must have exactly these column names.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file ({error})") from None
    lines = text.splitlines()
    first = 0
    if header is not None:
        if not lines or lines[0].split() != list(header):
            found = lines[0] if lines else "an empty file"
            raise ValueError(f"{path}:1: expected the header {' '.join(header)!r}, found {found!r}")
        first = 1
    for number, line in enumerate(lines[first:], start=first + 1):
        columns = line.split()
        if not columns:
            continue
        where = f"{path}:{number}"
        if len(columns) != fields:
            raise ValueError(f"{where}: expected {fields} columns, got {len(columns)} in {line!r}")
        yield where, columns


def parse_int(text: str, where: str) -> int:
    """int(text), or a ValueError that says where the bad field is."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{where}: expected an integer, got {text!r}") from None
