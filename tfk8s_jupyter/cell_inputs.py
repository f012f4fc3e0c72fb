"""The files of the notebook's folder a training cell reads by a relative path: found at submission
(:func:`find_inputs`), read for a job whose replicas do not see that folder (:func:`read_inputs`), listed by a
dry run (:func:`inputs_summary`)."""

from __future__ import annotations

import ast
import errno
import glob as globlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .payload import CaptureError

MAX_SHIPPED_BYTES = 8 * 1024 * 1024
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".git"}
_GLOB_CHARS = "*?["
_MAX_LISTED = 20


def inputs_summary(inputs: Mapping[str, int], backend: str) -> list[str]:
    """The ``inputs:`` lines of a dry run: what the replicas read from the notebook's folder, with sizes."""
    total = sum(inputs.values())
    if not inputs:
        return ["  inputs:      - (no file of the notebook's folder is named in the cell)"]
    how = (
        f"travel with the job, {human_size(total)} of {human_size(MAX_SHIPPED_BYTES)}"
        if backend == "kubernetes"
        else f"{human_size(total)}, read in place from the notebook's folder"
    )
    lines = [f"  inputs:      {len(inputs)} file{'s' if len(inputs) != 1 else ''} ({how})"]
    for rel in sorted(inputs)[:_MAX_LISTED]:
        lines.append(f"    {rel} ({human_size(inputs[rel])})")
    if len(inputs) > _MAX_LISTED:
        lines.append(f"    ... and {len(inputs) - _MAX_LISTED} more")
    return lines


def human_size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``1.5 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _InputFinder:
    """Files of the notebook's folder (``root``) the cell reads: ``rel path -> size``, in-root names."""

    def __init__(self, root: Path):
        self.root = root
        self.found: dict[str, int] = {}

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def add(self, path: Path, origin: str) -> None:
        """Add a file, or every file under a folder (symlinks followed, loops refused)."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise _read_error(origin, self._rel(path), e) from None
        if not os.path.isdir(path):
            self.found[self._rel(path)] = st.st_size
            return
        ancestors = {(st.st_dev, st.st_ino)}
        for parent in path.parents:
            try:
                pst = os.stat(parent)
            except OSError:
                break
            ancestors.add((pst.st_dev, pst.st_ino))
            if parent == self.root:
                break
        self._walk(path, origin, ancestors)

    def _walk(self, folder: Path, origin: str, ancestors: set[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise _read_error(origin, self._rel(folder), e) from None
        for entry in entries:
            if entry.name in _SKIP_DIRS:
                continue
            path = folder / entry.name
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # a dangling link: nothing to read there
            except OSError as e:
                raise _read_error(origin, self._rel(path), e) from None
            if entry.is_dir():
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise CaptureError(
                        f"{origin} leads into a symlink loop ({self._rel(path)!r} points back to a folder "
                        "that contains it); remove or fix that link, then submit again."
                    )
                self._walk(path, origin, ancestors | {key})
            else:
                self.found[self._rel(path)] = st.st_size

    def add_literal(self, text: str) -> None:
        """A string of the cell: an input when it names an existing path or glob in the notebook's folder."""
        if not text or len(text) > 1024 or "\n" in text or "\0" in text or "://" in text:
            return
        if os.path.isabs(text) or text.startswith("~"):
            return
        norm = os.path.normpath(text)
        if norm in (".", ".."):
            return
        pattern = any(c in text for c in _GLOB_CHARS)
        origin = f"the cell's path {text!r}"
        if norm.startswith(".." + os.sep):
            if os.path.lexists(self.root / norm) or (pattern and globlib.glob(str(self.root / norm))):
                raise CaptureError(
                    f"the cell reads {text!r}, which lies outside the notebook's folder {self.root} and so "
                    "does not reach the replicas; move it into the notebook's folder (or a folder inside it), "
                    "or use an absolute path that exists where the replicas run."
                )
            return
        if pattern:
            for match in sorted(globlib.glob(str(self.root / norm), recursive="**" in text)):
                self.add(Path(match), origin)
        elif os.path.lexists(self.root / norm):
            self.add(self.root / norm, origin)

    def add_pattern(self, pattern: str) -> None:
        """A ``--files`` entry: a file of any kind, a folder or a glob, relative to the notebook's folder."""
        norm = os.path.normpath(pattern)
        origin = f"--files {pattern!r}"
        if os.path.isabs(pattern) or norm == ".." or norm.startswith(".." + os.sep):
            try:
                inside = Path(os.path.abspath(self.root / pattern)).relative_to(self.root)
            except ValueError:
                raise CaptureError(
                    f"--files {pattern!r} lies outside the notebook's folder {self.root}; copy it into the "
                    "notebook's folder, or read it inside the cell from where the replicas run."
                ) from None
            norm = inside.as_posix() or "."
        if any(c in pattern for c in _GLOB_CHARS):
            matches = sorted(globlib.glob(str(self.root / norm), recursive="**" in pattern))
        else:
            matches = [str(self.root / norm)] if os.path.lexists(self.root / norm) else []
        if not matches:
            raise CaptureError(
                f"--files {pattern!r} matches no file under {self.root}; give a path or glob relative to the "
                "notebook's folder."
            )
        for match in matches:
            self.add(Path(match), origin)


def _read_error(origin: str, rel: str, e: OSError) -> CaptureError:
    if e.errno == errno.ELOOP:
        return CaptureError(
            f"{origin}: {rel!r} is a symlink loop (a link that points back to itself); remove or fix that "
            "link, then submit again."
        )
    if isinstance(e, FileNotFoundError):
        return CaptureError(
            f"{origin}: {rel!r} disappeared while the job was being prepared; make sure it exists, then "
            "submit again."
        )
    return CaptureError(
        f"{origin}: {rel!r} cannot be read ({e.strerror}); fix its permissions, then submit again."
    )


def _string_literals(sources: Iterable[str]) -> list[str]:
    out: list[str] = []
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in out:
                out.append(node.value)
    return out


def find_inputs(
    sources: Iterable[str], root: str | os.PathLike, patterns: Iterable[str] = ()
) -> dict[str, int]:
    """The files of the notebook's folder ``root`` the cell reads: ``relative path -> size``.

    ``sources`` are the cell and its shipped context; each string literal in them that names an existing
    file, folder or glob in ``root`` counts (folders: every file under them). ``patterns`` (``--files``)
    add files of any kind, folders and globs; when given, folders named only in the cell's strings are not
    taken whole (``--files`` then chooses what travels from them).

    Raises:
        CaptureError: a path outside ``root``, a ``--files`` entry matching nothing, a symlink loop, a
            file that disappears while being read.
    """
    finder = _InputFinder(Path(root).resolve())
    patterns = list(patterns)
    for text in _string_literals(sources):
        if patterns and os.path.isdir(finder.root / os.path.normpath(text)):
            continue
        finder.add_literal(text)
    for pattern in patterns:
        finder.add_pattern(pattern)
    return dict(sorted(finder.found.items()))


def read_inputs(inputs: Mapping[str, int], root: str | os.PathLike, limit: int = MAX_SHIPPED_BYTES) -> dict:
    """The bytes of ``inputs`` (for a job whose replicas do not see the notebook's folder).

    Raises:
        CaptureError: the inputs take more than ``limit`` (one sentence naming the largest and the ways
            out), or one of them disappeared since it was found.
    """
    total = sum(inputs.values())
    if total > limit:
        biggest = sorted(inputs.items(), key=lambda kv: -kv[1])[:3]
        names = ", ".join(f"{k!r} ({human_size(v)})" for k, v in biggest)
        raise CaptureError(
            f"the files this cell reads from the notebook's folder take {human_size(total)}, over the "
            f"{human_size(limit)} that travel with a Kubernetes job (largest: {names}); name only the files the "
            "cell needs with --files, or read the data inside the cell from a URI (gs://, s3://, https://)."
        )
    out: dict[str, bytes] = {}
    base = Path(root).resolve()
    for rel in inputs:
        try:
            out[rel] = (base / rel).read_bytes()
        except OSError as e:
            raise _read_error("an input of the cell", rel, e) from None
    return out
