"""Read members of a zip archive safely.

Refused, with the member named: path traversal (``..`` components), absolute paths and drive
letters, symbolic links, encrypted members, too many members, a total uncompressed size over the
limit, and a compression ratio over the limit (a "zip bomb"). Declared sizes can lie, so the
bytes actually produced while reading are counted too.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from truthset.domain.errors import InputError

#: Largest total uncompressed size of all members (bytes).
MAX_TOTAL_BYTES = 4 * 1024**3
#: Largest uncompressed/compressed ratio of one member.
MAX_RATIO = 200.0
#: Largest number of members.
MAX_MEMBERS = 100_000
#: Members smaller than this are not held to the ratio limit (tiny files compress oddly).
RATIO_FLOOR_BYTES = 1024 * 1024

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ZipMember:
    """One regular file read out of an archive.

    Parameters
    ----------
    name:
        The member's normalised relative path (``/`` separated).
    size:
        Uncompressed size in bytes.
    data:
        Its content.
    """

    name: str
    size: int
    data: bytes


def safe_member_name(name: str, *, archive: str = "<zip>") -> str:
    """Check a member name and return it normalised.

    Parameters
    ----------
    name:
        The name stored in the archive.
    archive:
        The archive's name, for error messages.

    Returns
    -------
    str
        The relative ``/``-separated path without ``.`` components.

    Raises
    ------
    InputError
        Absolute paths, drive letters, backslash-rooted paths, ``..`` components, NUL bytes.
    """
    if "\x00" in name:
        raise InputError("member name contains a NUL byte", source=archive, location=repr(name))
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise InputError("absolute path in archive", source=archive, location=name)
    parts = [p for p in PurePosixPath(unified).parts if p not in ("", ".")]
    if ".." in parts:
        raise InputError("path traversal ('..') in archive", source=archive, location=name)
    if not parts:
        raise InputError("empty member name", source=archive, location=repr(name))
    return "/".join(parts)


def iter_zip_members(
    path: str | os.PathLike[str],
    *,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
    max_members: int = MAX_MEMBERS,
) -> Iterator[ZipMember]:
    """Yield the regular files of a zip archive after checking it is safe.

    Every member is checked (names, links, encryption, declared sizes and ratios) before
    the first one is yielded, so a bad archive is refused before anything is imported.

    Parameters
    ----------
    path:
        The archive.
    max_total_bytes:
        Limit on the summed uncompressed size.
    max_ratio:
        Limit on one member's uncompressed/compressed ratio (members under 1 MiB exempt).
    max_members:
        Limit on the number of entries.

    Yields
    ------
    ZipMember
        Regular files in archive order (directories are skipped).

    Raises
    ------
    InputError
        With ``source`` the archive and ``location`` the member at fault.
    """
    label = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip archive ({exc})", source=label) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise InputError(f"too many members: {len(infos)} (limit {max_members})", source=label)
        total = 0
        checked: list[tuple[zipfile.ZipInfo, str]] = []
        seen: set[str] = set()
        for info in infos:
            name = safe_member_name(info.filename, archive=label)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InputError("symbolic link in archive", source=label, location=name)
            if info.flag_bits & 0x1:
                raise InputError("encrypted member", source=label, location=name)
            if info.is_dir():
                continue
            if name in seen:
                raise InputError("duplicate member name", source=label, location=name)
            seen.add(name)
            total += info.file_size
            if total > max_total_bytes:
                raise InputError(
                    f"archive expands to more than {max_total_bytes} bytes",
                    source=label,
                    location=name,
                )
            if info.file_size > RATIO_FLOOR_BYTES:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > max_ratio:
                    raise InputError(
                        f"compression ratio {ratio:.0f}:1 over the limit {max_ratio:.0f}:1 "
                        "(zip bomb?)",
                        source=label,
                        location=name,
                    )
            checked.append((info, name))
        produced = 0
        for info, name in checked:
            chunks: list[bytes] = []
            size = 0
            try:
                with archive.open(info) as stream:
                    while chunk := stream.read(_CHUNK):
                        size += len(chunk)
                        produced += len(chunk)
                        if size > info.file_size or produced > max_total_bytes:
                            raise InputError(
                                "member expands beyond its declared size",
                                source=label,
                                location=name,
                            )
                        chunks.append(chunk)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(f"corrupt member ({exc})", source=label, location=name) from exc
            yield ZipMember(name=name, size=size, data=b"".join(chunks))
