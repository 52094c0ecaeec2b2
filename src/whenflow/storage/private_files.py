"""Files and folders private to their user, whatever the umask.

`$WHENFLOW_HOME` holds the database and the artifacts, which may hold
anything a task read: the folders whenflow creates are 0700 and its files
0600. The mode given to `mkdir` or `open` is masked by the umask, so each
is set again, exactly, once created.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import yaml

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dirs(path: str | os.PathLike[str]) -> None:
    """Create the folder `path` and its missing parents as 0700 folders."""
    target = os.path.abspath(path)
    missing: list[str] = []
    folder = target
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    os.makedirs(target, mode=PRIVATE_DIR_MODE, exist_ok=True)
    for created in missing:
        os.chmod(created, PRIVATE_DIR_MODE)


def open_private(path: str | os.PathLike[str]) -> BinaryIO:
    """A new 0600 file opened for writing; raises FileExistsError if `path` exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create an empty 0600 file at `path` unless it exists (missing parents 0700)."""
    make_private_dirs(os.path.dirname(os.path.abspath(path)))
    try:
        open_private(path).close()
    except FileExistsError:
        return


def tighten(path: str | os.PathLike[str], mode: int) -> None:
    """Give an existing file or folder of this user `mode` if it is looser.

    For whenflow's own entries made by an older version (or another umask);
    symlinks and other users' entries are left alone.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, mode)


def read_private_yaml(
    path: Path, what: str, error: Callable[[str], Exception], too_open: str
) -> Any:
    """The YAML document of a file that must be private to its owner (mode 0600).

    `what` names the file in messages ("connections file"); `error` builds the
    exception raised for a mode others may use (`too_open`, with `{mode}`), an
    unreadable file or bad YAML (with `file:line:col`). None for an empty file.
    """
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            shown = too_open.format(mode=f"{stat.S_IMODE(mode):04o}")
            raise error(f"{path}: {shown}; run `chmod 600 {path}`")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise error(f"{where}: {problem}") from None
