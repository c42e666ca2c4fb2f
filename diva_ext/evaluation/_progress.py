"""When evaluation shows tqdm progress bars."""

from typing import Optional


def tqdm_disable(progress: Optional[bool], steps: int) -> Optional[bool]:
    """tqdm's ``disable`` for a loop of ``steps``: explicit on/off, or (None) a bar only for
    multi-step loops on a terminal (tqdm's ``disable=None`` turns it off when not a TTY)."""
    if progress is not None:
        return not progress
    return None if steps > 1 else True
