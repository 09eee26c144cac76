"""The on-disk cache: where built data sets live, and how they are written and checked.

Artefacts are written atomically (to a temporary file in the same folder, then renamed), and
each one has a SHA-256 digest recorded in a small JSON manifest beside it. A digest mismatch
on read means the cache is corrupted; callers rebuild rather than use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from weightspace._errors import CacheError

__all__ = ["atomic_path", "cache_dir", "cached_file", "file_digest", "update_json_mapping"]

logger = logging.getLogger(__name__)

_ENV = "WEIGHTSPACE_CACHE"


def cache_dir(*parts: str) -> Path:
    """Return (and create) the cache folder, or a subfolder of it.

    The root is ``$WEIGHTSPACE_CACHE`` when set, else ``$XDG_CACHE_HOME/weightspace``, else
    ``~/.cache/weightspace``.

    Args:
        *parts: Subfolder names under the root.

    Returns:
        The absolute path of the folder, which exists on return.
    """
    root = os.environ.get(_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "weightspace"
    path = base.joinpath(*parts).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success.

    If the body raises, the temporary file is removed and ``final`` is left as it was, so an
    interrupted write never leaves a partial file under the final name.

    Args:
        final: The path the finished file should have.

    Yields:
        A path in the same folder (same file system, so the rename is atomic).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def update_json_mapping(path: Path, entries: dict[str, Any]) -> dict[str, Any]:
    """Add ``entries`` to the JSON object stored at ``path``, safely across processes.

    Two processes that share a cache file (two studies asking the same model) would each
    rewrite it from their own copy and lose the other's entries. Here the writer holds an
    exclusive lock on a sidecar ``<name>.lock`` file, re-reads the file, merges ``entries``
    over it and replaces it atomically. An unreadable file is replaced (with a warning).

    Args:
        path: The JSON file (an object of string keys); created when missing.
        entries: The keys to add or overwrite.

    Returns:
        The merged mapping as written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            merged: dict[str, Any] = {}
            if path.is_file():
                try:
                    merged = dict(json.loads(path.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, TypeError, ValueError):
                    logger.warning("replacing the unreadable cache file %s", path)
            merged.update(entries)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(merged, indent=0), encoding="utf-8")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return merged


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached_file(
    path: Path,
    build: Callable[[Path], None],
    *,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Return ``path``, building it first if it is missing, stale or corrupted.

    ``build(tmp)`` must write the artefact to ``tmp``; it is then moved into place atomically
    and its digest and ``meta`` recorded in ``<path>.json``. On later calls the digest is
    checked: a corrupted artefact is rebuilt with a warning, never used; one built with other
    ``meta`` (other parameters or source files) is rebuilt with an info message.

    Args:
        path: Final location of the artefact.
        build: Writes the artefact to the path it is given.
        meta: Build parameters (seed, version, ...). A cached artefact built with other
            parameters is rebuilt.

    Returns:
        ``path``, which holds a verified artefact on return.

    Raises:
        CacheError: if the freshly built artefact cannot be verified.
    """
    meta = dict(meta or {})
    manifest = _manifest_path(path)
    if path.exists() and manifest.exists():
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            recorded = {}
        if recorded.get("meta") != meta:
            logger.info(
                "cache entry %s was built from other sources or parameters; rebuilding", path
            )
        elif recorded.get("sha256") != file_digest(path):
            logger.warning("cache entry %s is corrupted (checksum mismatch); rebuilding it", path)
        else:
            return path
    elif path.exists():
        logger.warning("cache entry %s has no manifest; rebuilding it", path)
    with atomic_path(path) as tmp:
        build(tmp)
        digest = file_digest(tmp)
    with atomic_path(manifest) as tmp_manifest:
        tmp_manifest.write_text(json.dumps({"sha256": digest, "meta": meta}, indent=1))
    if file_digest(path) != digest:  # pragma: no cover - only on a concurrent writer
        raise CacheError(f"cache entry {path} changed while it was being written; retry")
    return path
