"""DICOMweb plumbing with no knowledge of projects: multipart/related bodies, Accept header
negotiation, QIDO-RS matching, frames and DICOM JSON metadata of one instance.

PS3.18 is the reference: multipart/related messages (section 8.7), QIDO-RS matching
(section 10.6.1.2: single value, wildcard ``*``/``?``, UID lists, date ranges), frames as
the raw pixel bytes of each frame (native, Explicit VR Little Endian) or the compressed
fragment of each frame as stored.
"""

from __future__ import annotations

import fnmatch
import io
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian

from truthset.domain.errors import InputError

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"

#: Media types of compressed frames, by transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

#: Binary elements larger than this are left out of metadata (fetch the instance or frames).
BULK_THRESHOLD = 1024


# --------------------------------------------------------------------------- multipart

@dataclass(frozen=True)
class Part:
    """One body part of a multipart/related message."""

    content_type: str
    data: bytes


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type / Accept entry into its media type and lower-cased parameters."""
    media, *rest = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for item in rest:
        key, _, val = item.partition("=")
        if key:
            params[key.strip().lower()] = val.strip().strip('"')
    return media.lower(), params


def encode_multipart(parts: Sequence[Part]) -> tuple[bytes, str]:
    """Encode parts as a multipart/related body; return it and the boundary."""
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part.content_type}\r\n\r\n".encode())
        chunks.append(part.data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), boundary


def decode_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/related body into its parts.

    Raises
    ------
    InputError
        Not multipart/related, no boundary, or no closing delimiter (a truncated body).
    """
    media, params = content_type_params(content_type)
    if media != "multipart/related":
        raise InputError(f"expected multipart/related, got {media or 'nothing'}",
                         field="Content-Type")
    boundary = params.get("boundary")
    if not boundary:
        raise InputError("multipart/related without a boundary", field="Content-Type")
    marker = b"--" + boundary.encode()
    if marker + b"--" not in body:
        raise InputError("the multipart body has no closing boundary (truncated?)",
                         field="body")
    default_type = params.get("type", DICOM)
    parts: list[Part] = []
    for chunk in body.split(marker)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, data = b"", chunk
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers.get("content-type", default_type), data.removesuffix(b"\r\n")))
    return parts


@dataclass(frozen=True)
class Acceptable:
    """One acceptable representation from an Accept header."""

    media_type: str
    transfer_syntax: str | None


def parse_accept(header: str | None, default: str) -> list[Acceptable]:
    """The representations an Accept header allows, in order; multipart entries are
    reduced to their ``type`` parameter. No header means ``default``."""
    if not header:
        return [Acceptable(default, None)]
    out = []
    for entry in header.split(","):
        media, params = content_type_params(entry)
        if media == "multipart/related":
            media = params.get("type", "*/*").lower()
        out.append(Acceptable(media, params.get("transfer-syntax")))
    return out


def _covers(pattern: str, media: str) -> bool:
    return pattern in ("*/*", "*", media) or (pattern.endswith("/*")
                                               and media.startswith(pattern[:-1]))


def negotiate_instance(accept: list[Acceptable], stored: str) -> str | None:
    """The transfer syntax to send an instance in: the stored one when the client takes
    any (``transfer-syntax=*``) or that one, Explicit VR Little Endian when it names no
    transfer syntax (the PS3.18 default); ``None`` when nothing acceptable is possible."""
    for a in accept:
        if not _covers(a.media_type, DICOM):
            continue
        if a.transfer_syntax in ("*", stored):
            return stored
        if a.transfer_syntax in (None, str(ExplicitVRLittleEndian)):
            return str(ExplicitVRLittleEndian)
    return None


def negotiate_frames(accept: list[Acceptable], stored: str) -> str | None:
    """``"native"`` (raw pixel bytes, application/octet-stream), ``"stored"`` (the
    compressed fragments as stored, in their own media type), or ``None``."""
    compressed = UID(stored).is_compressed
    stored_type = FRAME_MEDIA_TYPES.get(stored, OCTET) if compressed else OCTET
    for a in accept:
        if a.media_type == OCTET and a.transfer_syntax in (None, "*",
                                                           str(ExplicitVRLittleEndian)):
            return "stored" if not compressed or a.transfer_syntax == "*" else "native"
        if _covers(a.media_type, stored_type) and a.transfer_syntax in (None, "*", stored):
            return "stored"
    return None


# --------------------------------------------------------------------------- instances

def read_instance(data: bytes) -> Dataset:
    """Parse stored instance bytes."""
    return pydicom.dcmread(io.BytesIO(data))


def as_transfer_syntax(data: bytes, transfer_syntax: str) -> bytes:
    """The instance in ``transfer_syntax`` (only decompression to Explicit VR Little Endian
    is offered besides sending it as stored).

    Raises
    ------
    InputError
        The pixels cannot be decoded.
    """
    ds = read_instance(data)
    if str(ds.file_meta.TransferSyntaxUID) == transfer_syntax:
        return data
    try:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    except Exception as exc:  # pydicom raises many kinds; all mean "cannot decode"
        raise InputError(f"cannot decode the stored pixel data: {exc}") from exc
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def frames(ds: Dataset, numbers: Sequence[int], mode: str) -> list[Part]:
    """Frames ``numbers`` (1-based) of an instance, as :func:`negotiate_frames` chose.

    Raises
    ------
    InputError
        A frame number outside ``1..NumberOfFrames``.
    """
    count = int(ds.get("NumberOfFrames", 1) or 1)
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad or not numbers:
        raise InputError(f"frame {bad[0] if bad else '(none)'} does not exist; the instance "
                         f"has {count} frame(s)", field="frames")
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed and mode == "stored":
        media = FRAME_MEDIA_TYPES.get(str(ts), OCTET)
        fragments = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [Part(f"{media}; transfer-syntax={ts}", fragments[n - 1]) for n in numbers]
    if not ts.is_compressed:
        size = len(ds.PixelData) // count if int(ds.BitsAllocated) != 1 else None
        if size is not None:
            return [Part(OCTET + f"; transfer-syntax={ExplicitVRLittleEndian}",
                         bytes(ds.PixelData[(n - 1) * size:n * size])) for n in numbers]
    pixels = np.asarray(ds.pixel_array)
    stack = pixels if count > 1 else pixels[np.newaxis]
    return [Part(OCTET + f"; transfer-syntax={ExplicitVRLittleEndian}",
                 np.ascontiguousarray(stack[n - 1]).astype(stack.dtype.newbyteorder("<"))
                 .tobytes()) for n in numbers]


def metadata(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON of an instance without its pixel data and large binary elements."""
    header = Dataset()
    for elem in ds:
        if int(elem.tag) not in _PIXEL_TAGS:
            header.add(elem)
    out: dict[str, Any] = header.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=lambda _e: "")
    for key in [k for k, v in out.items() if isinstance(v, dict) and "BulkDataURI" in v]:
        del out[key]
    if "TransferSyntaxUID" in ds.file_meta:
        out["00020010"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
    return out


# --------------------------------------------------------------------------- QIDO-RS

_DATE_RANGE = re.compile(r"^(\d{8})?-(\d{8})?$")


def query_tag(name: str) -> str:
    """A QIDO query key (keyword or 8 hex digits) as the DICOM JSON key.

    Raises
    ------
    InputError
        Neither a known keyword nor a tag.
    """
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise InputError(f"unknown attribute {name!r} in the query", field=name)
    return f"{tag:08X}"


def _values(attrs: Mapping[str, Any], key: str) -> list[str]:
    entry = attrs.get(key) or {}
    out = []
    for v in entry.get("Value", []) or []:
        out.append(str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v))
    return out


def matches(attrs: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Whether DICOM JSON ``attrs`` match QIDO ``query`` (tag keys -> values): UID lists
    (comma or backslash separated), ``*``/``?`` wildcards (case-insensitive for names),
    date ranges ``a-b``, otherwise exact; an empty query value matches anything."""
    for key, wanted in query.items():
        if wanted in ("", "*"):
            continue
        have = _values(attrs, key)
        vr = (attrs.get(key) or {}).get("vr")
        if vr == "UI" or "\\" in wanted or ("," in wanted and key.endswith(("000D", "000E",
                                                                              "0018"))):
            options = {w.strip() for w in re.split(r"[\\,]", wanted)}
            if not options & set(have):
                return False
            continue
        date = _DATE_RANGE.match(wanted)
        if date and vr in ("DA", None) and "-" in wanted:
            lo, hi = date.group(1) or "00000000", date.group(2) or "99999999"
            if not any(lo <= h[:8] <= hi for h in have if h):
                return False
            continue
        if "*" in wanted or "?" in wanted:
            pattern = wanted.lower() if vr == "PN" else wanted
            if not any(fnmatch.fnmatchcase(h.lower() if vr == "PN" else h, pattern)
                       for h in have):
                return False
            continue
        if wanted not in have:
            return False
    return True


def select_fields(attrs: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The entries of ``attrs`` named by ``keys`` (present ones only)."""
    return {k: attrs[k] for k in keys if k in attrs}
