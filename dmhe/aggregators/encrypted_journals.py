"""Where the encrypted aggregator keeps its share journals.

Without persisted keys (option ``key_dir``, see :mod:`dmhe.aggregators.encrypted_keys`) key
shares are generated at every set-up and never written to disk, so each gets a journal file
of its own (`gpubfv.mhe.ShareJournal.open`: append-only, fsync'd, mode 0600): in the folder the
caller names (the trainer uses the run directory's ``journals/``), else in a private temporary
directory of this process (mode 0700, removed at exit). A journal must outlive its key share;
an ephemeral key share dies with the process, and so may its journal.
"""

from __future__ import annotations

import functools
import secrets
import tempfile
from pathlib import Path

from dmhe.aggregators.encrypted_keystore import journal_path
from gpubfv.mhe import ShareJournal

__all__ = ["open_journal"]

_TEMP_DIRS: list[tempfile.TemporaryDirectory[str]] = []


@functools.cache
def _private_dir() -> str:
    """This process's private directory for the journals of ephemeral key shares."""
    holder = tempfile.TemporaryDirectory(prefix="dmhe-journals-")
    _TEMP_DIRS.append(holder)  # kept alive (and removed) with the process
    return holder.name


def open_journal(
    folder: str | None,
    rank: int,
    key: str,
    key_dir: str | None = None,
    setup_id: str | None = None,
) -> ShareJournal:
    """A new journal file for key share ``key`` ("additive", "threshold") of peer ``rank``; with
    ``key_dir`` (persisted keys) the one file of that set-up, reopened by a restart."""
    if key_dir is not None:
        if setup_id is None:
            raise ValueError("a persisted key share's journal needs the set-up id")
        return ShareJournal.open(journal_path(key_dir, key, setup_id))
    if folder is None:
        path = Path(_private_dir())
    else:
        path = Path(folder)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return ShareJournal.open(path / f"peer{rank}-{key}-{secrets.token_hex(8)}.journal")
