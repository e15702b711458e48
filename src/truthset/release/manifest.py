"""Release manifests, Merkle roots, signature files and offline verification of a release folder.

Pure file logic, no database: a release folder can be checked anywhere with
:func:`verify_folder` (``truthset release verify DIR``).

Layout of a release folder::

    manifest.json          release, project, rule versions, audit head, every file's SHA-256
                           and size, and the Merkle root over them
    <files listed in the manifest>
    signatures/<user>.json approvals, each bound to the SHA-256 of manifest.json; a
                           ``truthset-signature/2`` file also holds the signer's Ed25519
                           public key and the signature over its canonical fields

The Merkle tree follows RFC 6962 (leaf = SHA-256(0x00 || leaf data), node =
SHA-256(0x01 || left || right), split at the largest power of two below the leaf count); a
leaf's data is ``"<name>\\n<sha256>\\n<bytes>"`` and the leaves are sorted by file name.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

MANIFEST = "manifest.json"
SIGNATURES_DIR = "signatures"
MANIFEST_FORMAT = "truthset-release/1"
SIGNATURE_FORMAT = "truthset-signature/2"
#: Signatures made before key pairs: a SHA-256 binding, no key.
LEGACY_SIGNATURE_FORMAT = "truthset-signature/1"
#: What :attr:`SignatureCheck.key` says of a legacy signature.
LEGACY_KEY = "legacy binding, no key"


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, as hex."""
    return hashlib.sha256(data).hexdigest()


def canonical_bytes(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, two-space indent, trailing newline), UTF-8."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _leaf(name: str, digest: str, size: int) -> bytes:
    return hashlib.sha256(b"\x00" + f"{name}\n{digest}\n{size}".encode()).digest()


def _tree(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + _tree(leaves[:split]) + _tree(leaves[split:])).digest()


def merkle_root(files: Mapping[str, Mapping[str, Any]]) -> str:
    """RFC 6962 Merkle root (hex) over ``{name: {"sha256", "bytes"}}``; the empty tree hashes
    the empty string."""
    if not files:
        return sha256_hex(b"")
    leaves = [_leaf(n, str(files[n]["sha256"]), int(files[n]["bytes"])) for n in sorted(files)]
    return _tree(leaves).hex()


def file_entries(files: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` of in-memory files, sorted by name."""
    return {name: {"sha256": sha256_hex(files[name]), "bytes": len(files[name])}
            for name in sorted(files)}


def build_manifest(meta: Mapping[str, Any], files: Mapping[str, bytes]) -> bytes:
    """The bytes of ``manifest.json``: ``meta`` plus the file entries and their Merkle root."""
    entries = file_entries(files)
    if MANIFEST in entries or any(n.startswith(SIGNATURES_DIR + "/") for n in entries):
        raise ValueError("manifest.json and signatures/ are not release content files")
    body = {**meta, "format": MANIFEST_FORMAT, "files": entries,
            "merkle_root": merkle_root(entries)}
    return canonical_bytes(body)


# -- signatures ------------------------------------------------------------------------------
#: Fields a legacy (``truthset-signature/1``) signature's hash covers, in the file.
SIGNED_FIELDS = ("format", "release", "project", "manifest_sha256", "merkle_root", "signer",
                 "printed_name", "meaning", "signed_at")
#: Fields the Ed25519 signature of a ``truthset-signature/2`` file covers.
KEY_SIGNED_FIELDS = (*SIGNED_FIELDS, "key_id")
#: Every key of a ``truthset-signature/2`` file.
KEY_DOC_FIELDS = frozenset({*KEY_SIGNED_FIELDS, "signature_sha256", "field_sha256",
                            "public_key", "ed25519_signature"})


def public_key_pem(key: Ed25519PublicKey) -> str:
    """An Ed25519 public key as SubjectPublicKeyInfo PEM text."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte Ed25519 public key: the key's id."""
    return sha256_hex(key.public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw))


def signed_payload(doc: Mapping[str, Any]) -> bytes:
    """The bytes an Ed25519 signature covers: the canonical JSON of the signed fields."""
    return canonical_bytes({k: doc.get(k) for k in KEY_SIGNED_FIELDS})


def _field_digest(value: Any) -> str:
    return sha256_hex(canonical_bytes(value))


def signature_document(
    *, release: str, project: str, manifest_sha256: str, merkle_root_hex: str, signer: str,
    printed_name: str, meaning: str, signed_at: str, key: Ed25519PrivateKey | None = None,
) -> dict[str, Any]:
    """The content of a signature file.

    With ``key``: a ``truthset-signature/2`` document whose ``ed25519_signature`` (base64)
    signs :func:`signed_payload`, with the signer's ``public_key`` (PEM) and its ``key_id``;
    ``field_sha256`` (each signed field's digest) only helps name an edited field. Without:
    a legacy ``truthset-signature/1`` document (a SHA-256 binding, no key).
    """
    doc: dict[str, Any] = {
        "format": SIGNATURE_FORMAT if key is not None else LEGACY_SIGNATURE_FORMAT,
        "release": release, "project": project,
        "manifest_sha256": manifest_sha256, "merkle_root": merkle_root_hex, "signer": signer,
        "printed_name": printed_name, "meaning": meaning, "signed_at": signed_at,
    }
    if key is None:
        doc["signature_sha256"] = signature_hash(doc)
        return doc
    public = key.public_key()
    doc["key_id"] = key_fingerprint(public)
    payload = signed_payload(doc)
    doc["signature_sha256"] = sha256_hex(payload)
    doc["field_sha256"] = {k: _field_digest(doc[k]) for k in KEY_SIGNED_FIELDS}
    doc["public_key"] = public_key_pem(public)
    doc["ed25519_signature"] = base64.b64encode(key.sign(payload)).decode()
    return doc


def signature_hash(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a legacy signature's signed fields."""
    return sha256_hex(canonical_bytes({k: doc.get(k) for k in SIGNED_FIELDS}))


def signature_file_name(signer: str) -> str:
    """Where a signer's signature lives inside a release folder."""
    return f"{SIGNATURES_DIR}/{signer}.json"


# -- verification ----------------------------------------------------------------------------
@dataclass
class SignatureCheck:
    """The verdict on one signature file."""

    file: str
    ok: bool
    signer: str | None = None
    printed_name: str | None = None
    meaning: str | None = None
    signed_at: str | None = None
    problem: str = ""
    #: ``ed25519 <key id>`` or :data:`LEGACY_KEY`.
    key: str = ""


@dataclass
class VerifyReport:
    """What :func:`verify_folder` found. ``ok`` only when nothing at all is wrong."""

    folder: str
    release: str | None = None
    manifest_sha256: str | None = None
    merkle_root: str | None = None
    n_files: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    signatures: list[SignatureCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the folder matches its manifest and every signature verifies."""
        return not (self.changed or self.missing or self.extra or self.problems
                    or any(not s.ok for s in self.signatures))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_signature(doc: Any, *, manifest: Mapping[str, Any], manifest_sha256: str,
                    file: str) -> SignatureCheck:
    """Check one parsed signature document against the manifest it claims to sign."""
    if not isinstance(doc, dict):
        return SignatureCheck(file, False, problem="not a JSON object")
    check = SignatureCheck(file, False, signer=doc.get("signer"),
                           printed_name=doc.get("printed_name"), meaning=doc.get("meaning"),
                           signed_at=doc.get("signed_at"))
    if doc.get("format") == SIGNATURE_FORMAT:
        check.key = f"ed25519 {doc.get('key_id')}"
        check.problem = _key_problem(doc)
    elif doc.get("format") == LEGACY_SIGNATURE_FORMAT:
        check.key = LEGACY_KEY
        if set(doc) != {*SIGNED_FIELDS, "signature_sha256"} or (
                doc.get("signature_sha256") != signature_hash(doc)):
            check.problem = "the signature was edited (its hash does not match its fields)"
    else:
        check.problem = f"unknown signature format {doc.get('format')!r}"
    if check.problem:
        return check
    if doc.get("manifest_sha256") != manifest_sha256:
        check.problem = ("the signature is bound to another manifest (signed for a different "
                         "or altered release)")
    elif doc.get("release") != manifest.get("release") or (
            doc.get("project") != manifest.get("project")):
        check.problem = "the signature names another release"
    elif doc.get("merkle_root") != manifest.get("merkle_root"):
        check.problem = "the signature's Merkle root differs from the manifest's"
    elif file != signature_file_name(str(doc.get("signer"))):
        check.problem = "the signature file is not named after its signer"
    else:
        check.ok = True
    return check


def _key_problem(doc: Mapping[str, Any]) -> str:
    """What is wrong with a ``truthset-signature/2`` document's key and Ed25519 signature,
    or ``""``."""
    if set(doc) != KEY_DOC_FIELDS:
        return "the signature was edited (fields added or removed)"
    try:
        public = serialization.load_pem_public_key(str(doc["public_key"]).encode())
        raw = base64.b64decode(str(doc["ed25519_signature"]), validate=True)
    except (ValueError, TypeError):
        return "the public key or the signature bytes are not readable"
    if not isinstance(public, Ed25519PublicKey):
        return "wrong key: the public key is not an Ed25519 key"
    if key_fingerprint(public) != doc.get("key_id"):
        return "wrong key: the public key is not the key the signature names (key id differs)"
    try:
        public.verify(raw, signed_payload(doc))
    except InvalidSignature:
        digests = doc.get("field_sha256")
        edited = [k for k in KEY_SIGNED_FIELDS if isinstance(digests, dict)
                  and digests.get(k) != _field_digest(doc.get(k))]
        if edited:
            return ("the signature was edited: " + ", ".join(edited)
                    + " changed since signing (the Ed25519 signature does not verify)")
        return ("the Ed25519 signature does not verify with the signer's public key (wrong key, "
                "or the signed fields were edited)")
    return ""


def verify_folder(folder: str | Path,
                  trusted_keys: Mapping[str, Sequence[str]] | None = None) -> VerifyReport:
    """Check a release folder offline against its ``manifest.json``.

    Names every changed, missing and extra file; recomputes the Merkle root; checks every file
    under ``signatures/`` (edited, wrong key, or bound to another manifest). With
    ``trusted_keys`` (signer -> key ids obtained out of band), a signature is valid only when
    made with one of its signer's trusted keys, and a legacy signature (no key) is invalid.
    Never raises for a broken folder: everything wrong is in the report.
    """
    root = Path(folder)
    report = VerifyReport(folder=str(root))
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        report.problems.append(f"no {MANIFEST} in {root}")
        return report
    raw = manifest_path.read_bytes()
    report.manifest_sha256 = sha256_hex(raw)
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST} is not a valid manifest: {exc}")
        return report
    report.release = manifest.get("release")
    report.n_files = len(files)
    report.merkle_root = merkle_root(files)
    if manifest.get("merkle_root") != report.merkle_root:
        report.problems.append("the manifest's Merkle root does not match its file list")
    if raw != canonical_bytes(manifest):
        report.problems.append(f"{MANIFEST} is not in canonical form (it was edited)")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for name in sorted(files):
        path = root / name
        if name not in present:
            report.missing.append(name)
            continue
        digest, size = _hash_file(path)
        if digest != files[name].get("sha256") or size != files[name].get("bytes"):
            report.changed.append(name)
    signature_files = sorted(n for n in present if n.startswith(SIGNATURES_DIR + "/"))
    report.extra = sorted(n for n in present - set(files) - {MANIFEST}
                          if n not in signature_files)
    for name in signature_files:
        data = (root / name).read_bytes()
        try:
            doc = json.loads(data)
        except ValueError:
            report.signatures.append(SignatureCheck(name, False, problem="not valid JSON"))
            continue
        check = check_signature(doc, manifest=manifest, manifest_sha256=report.manifest_sha256,
                                file=name)
        if check.ok and data != canonical_bytes(doc):
            check.ok, check.problem = False, "the signature file was edited (not canonical)"
        if check.ok and trusted_keys is not None and (
                doc.get("format") != SIGNATURE_FORMAT
                or doc.get("key_id") not in trusted_keys.get(str(doc.get("signer")), ())):
            check.ok, check.problem = False, (
                f"wrong key: not a trusted key of {doc.get('signer')!r} ({check.key})")
        report.signatures.append(check)
    return report
