"""Checks of the paths commands write to, made before any work starts.

Each bad path is a one-line :class:`ConfigError` naming the option (exit code 2), never a
traceback after the run. Commands create no directory but the one the user named (or one
below ``INFSCALE_HOME``): a missing parent folder is an error, not created.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_output_file", "output_dir", "check_db_path", "RUN_ID_RE", "check_run_id", "file_in"]


def _folder_ok(name: str, folder: Path, shown: str) -> None:
    if not folder.exists():
        raise ConfigError(name, f"the folder of {shown} does not exist ({folder})",
                          "a path in an existing folder")
    if not folder.is_dir():
        raise ConfigError(name, f"{folder} (in {shown}) is not a folder", "a path in an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(name, f"cannot write in {folder}", "a path in a folder you can write to")


def check_output_file(name: str, path: str | Path) -> Path:
    """``path`` can be written as a file: not a directory, its folder exists and is writable."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(name, f"{path} is a directory", "a file path (not a directory)")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(name, f"{path} is not writable", "a file you can write to")
    _folder_ok(name, p.absolute().parent, str(path))
    return p


def output_dir(name: str, path: str | Path) -> Path:
    """The directory ``path``, created if missing (itself only, never its parents)."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(name, f"{path} exists and is not a directory", "a directory (existing or new)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(name, f"cannot write in {path}", "a directory you can write to")
        return p
    _folder_ok(name, p.absolute().parent, str(path))
    try:
        p.mkdir()
    except OSError as e:
        raise ConfigError(name, f"cannot create {path}: {e.strerror}", "a directory you can write to") from None
    return p


def check_db_path(path: str | Path, *, create: bool) -> Path:
    """A ``--db`` path: an existing file for the commands that read runs (``create=False``),
    else a file that may be created in an existing, writable folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError("--db", f"{path} is a directory", "a run database file, e.g. runs.sqlite")
    if not p.exists():
        if not create:
            raise ConfigError("--db", f"no database at {path}", "the run database an earlier eval wrote")
        _folder_ok("--db", p.absolute().parent, str(path))
    elif not os.access(p, os.R_OK):
        raise ConfigError("--db", f"{path} is not readable", "a run database you can read")
    return p


# Run ids name files (reports, exports): letters, digits, '.', '_' and '-', no path separator,
# not starting with a dot. ``new_run_id`` makes ids like 20261203-084006-87f1a8.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is safe to put into a file name, else a one-line error."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id) or ".." in run_id:
        raise ConfigError("run", f"{run_id!r} is not a valid run id",
                          "letters, digits, '.', '_' and '-' (no path separators), e.g. 20261203-084006-87f1a8")
    return run_id


def file_in(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it stays directly inside ``folder``."""
    path = folder / name
    if path.resolve().parent != folder.resolve() or Path(name).name != name:
        raise ConfigError("run", f"the file name {name!r} would leave {folder}", "a run id without path separators")
    return path
