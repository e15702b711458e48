"""Content-addressed blob store for pixels, masks and exports, on any fsspec file system.

A blob's name is the SHA-256 of its bytes, so identical content is stored once and every
reference can be verified by hashing what comes back. The default is a local folder; any fsspec
URL (``s3://bucket/prefix``, ``memory://x``, ``gcs://…``) works by configuration.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from truthset.domain.errors import NotFoundError, TruthsetError

CHUNK = 1 << 20


class BlobIntegrityError(TruthsetError):
    """Stored bytes no longer hash to their name."""


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore:
    """Store and fetch blobs by SHA-256.

    Parameters
    ----------
    url:
        A local folder path or any fsspec URL. Blobs live under ``<url>/sha256/ab/cd/<digest>``.
    storage_options:
        Passed to fsspec (credentials, endpoint URL…).
    """

    def __init__(self, url: str | Path, **storage_options: object) -> None:
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, digest: str) -> str:
        """Where the blob ``digest`` lives inside the file system."""
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:4]}/{digest}"

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored."""
        return bool(self.fs.exists(self.path(digest)))

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (once) and return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            self._write(digest, lambda fh: fh.write(data))
        return digest

    def put_file(self, path: str | Path) -> str:
        """Store a file's content (once), streaming it, and return its SHA-256."""
        digest = sha256_file(path)
        if not self.exists(digest):

            def copy(fh: IO[bytes]) -> None:
                with open(path, "rb") as src:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        fh.write(chunk)

            self._write(digest, copy)
        return digest

    def _write(self, digest: str, writer: Callable[[IO[bytes]], object]) -> None:
        target = self.path(digest)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self._local:
            # Write beside the target, then rename: a killed process never leaves a partial blob
            # under a valid name.
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            with self.fs.open(target, "wb") as fh:
                writer(fh)

    def delete(self, digest: str) -> bool:
        """Remove the blob ``digest``; return whether it was there.

        Callers remove a blob only once no database row refers to it any more (see
        :mod:`truthset.store.blob_refs`), after the transaction that dropped the last
        reference committed.
        """
        target = self.path(digest)
        if not self.fs.exists(target):
            return False
        self.fs.rm(target)
        return True

    def open(self, digest: str) -> BinaryIO:
        """Open a stored blob for reading."""
        if not self.exists(digest):
            raise NotFoundError(f"blob {digest} is not in the store {self.url}")
        handle: BinaryIO = self.fs.open(self.path(digest), "rb")
        return handle

    def get_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """Read a blob; with ``verify`` its hash is checked."""
        with self.open(digest) as fh:
            data = fh.read()
        if verify and hashlib.sha256(data).hexdigest() != digest:
            raise BlobIntegrityError(f"blob {digest} does not match its hash")
        return data

    def verify(self, digest: str) -> bool:
        """Whether the stored bytes still hash to ``digest``."""
        digest_now = hashlib.sha256()
        with self.open(digest) as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest_now.update(chunk)
        return digest_now.hexdigest() == digest

    def __iter__(self) -> Iterator[str]:
        """Digests of every stored blob."""
        base = f"{self.root}/sha256"
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            name = str(path).rsplit("/", 1)[-1]
            if len(name) == 64 and not name.startswith(".tmp-"):
                yield name
