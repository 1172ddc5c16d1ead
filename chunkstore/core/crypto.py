"""Client-side encryption: a random master key, wrapped by a passphrase, and subkeys for each use.

- The master key (32 random bytes) is stored only wrapped: AES-256-GCM under a key
  derived from the passphrase with Argon2id (parameters and salt in the config).
  Changing the passphrase rewraps it; no data is re-encrypted.
- Subkeys come from the master key by HKDF-SHA256 with one label per use: keyed BLAKE3
  for chunk IDs and for whole-file digests, the FastCDC gear seed, and the AEAD keys for
  chunk objects and for the chunk tables of packs. So the same file in two stores gives
  different chunk IDs and different chunk boundaries, and recipes (lists of keyed IDs and
  lengths) reveal no content.
- The config of an encrypted store carries an authentication code (keyed BLAKE3 under its own
  subkey) over everything else in it, so an edit of the chunker, compression, catalog or key
  parameters is refused once the store is unlocked. The nonce of a wrapped key is derived from
  the master key: that marks key sections written with a code, so stripping the code from the
  config (or lowering the config version) is found too. Older sections (random nonce, no code)
  still open, and get both when the passphrase is next changed.
- Every sealed message gets its own key: BLAKE3(nonce, key=subkey) with a fresh 24-byte
  random nonce, then AES-256-GCM with that key. Keys are never reused, so nonce reuse
  across any number of concurrent writers cannot happen in practice (a 192-bit random
  value), unlike a 96-bit random GCM nonce under one key (safe for ~2^32 messages).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chunkstore.errors import CorruptObjectError, InvalidArgumentError, UnsupportedFormatError, WrongKeyError

SCHEME = "chunkstore-aead-1"
CIPHER = "aes-256-gcm-derived-key"
NONCE_SIZE = 24
TAG_SIZE = 16
_GCM_NONCE = bytes(12)  # each key seals one message, so a constant GCM nonce is safe

# Argon2id at 64 MiB, 3 passes, 4 lanes (RFC 9106's second recommended option): 0.18 s to
# unlock on this machine when idle (0.43 s under load), which is felt once per command and
# makes every passphrase guess cost as much.
DEFAULT_KDF = {"name": "argon2id", "memory_kib": 64 * 1024, "iterations": 3, "lanes": 4}
# The largest Argon2id parameters a config may ask for. They are read before anything in the
# config can be authenticated, so without a bound an edited config could make every command
# allocate terabytes or run for days. 2 GiB is RFC 9106's first recommended option (2 GiB,
# 1 pass, 4 lanes); 16 passes at 2 GiB would take ~30 s here (64 MiB x 3 passes: 0.18 s).
KDF_LIMITS = {"memory_kib": (8, 2 * 1024 * 1024), "iterations": (1, 16), "lanes": (1, 16)}

_LABELS = {
    "chunk_id": b"chunkstore 1 chunk-id",
    "file_digest": b"chunkstore 1 file-digest",
    "chunker_seed": b"chunkstore 1 chunker-seed",
    "objects": b"chunkstore 1 object-aead",
    "config_mac": b"chunkstore 1 config-mac",
    "wrap_nonce": b"chunkstore 1 wrap-nonce",
    "pack_table": b"chunkstore 1 pack-table",
    "names": b"chunkstore 1 metadata-names",
    "records": b"chunkstore 1 metadata-records",
    "labels": b"chunkstore 1 metadata-labels",
}
# AES-SIV with a 512-bit key: two AES-256 keys, one for the SIV's CMAC and one for CTR.
SIV_KEY_SIZE = 64
WRAP_NONCE_SIZE = 12


def _derive(master: bytes, label: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_LABELS[label]).derive(master)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class Sealer:
    """Authenticated encryption of whole messages under one subkey."""

    def __init__(self, key: bytes):
        self._key = key

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        message_key = blake3.blake3(nonce, key=self._key).digest()
        return nonce + AESGCM(message_key).encrypt(_GCM_NONCE, plaintext, associated)

    def open(self, sealed: bytes | memoryview, associated: bytes) -> bytes:
        """Return the plaintext; raise CorruptObjectError if sealed was altered or belongs elsewhere."""
        if len(sealed) < NONCE_SIZE + TAG_SIZE:
            raise CorruptObjectError("encrypted payload is too short")
        nonce = bytes(sealed[:NONCE_SIZE])
        message_key = blake3.blake3(nonce, key=self._key).digest()
        try:
            return AESGCM(message_key).decrypt(_GCM_NONCE, bytes(sealed[NONCE_SIZE:]), associated)
        except InvalidTag:
            raise CorruptObjectError("authentication failed: the data was altered, or moved from elsewhere") from None


@dataclass(frozen=True)
class Keys:
    """The subkeys of an unlocked store."""

    chunk_id: bytes
    file_digest: bytes
    chunker_seed: int
    objects: Sealer
    config_mac: bytes
    pack_tables: Sealer  # the chunk tables of packs (storage format 2, packformat.py)
    # A store that seals its metadata (chunkstore/backends/sealed.py): the AES-SIV key of name
    # components, the sealer of stat data and snapshot records, and the key of the one-way
    # labels of what is only compared (session hosts, the ingest ledger's keys and versions).
    names: bytes
    records: Sealer
    labels: bytes

    @classmethod
    def from_master(cls, master: bytes) -> Keys:
        # pyfastcdc takes a seed that fits in 63 bits (a signed 64-bit C integer).
        seed = int.from_bytes(_derive(master, "chunker_seed", 8), "big") & ((1 << 63) - 1)
        return cls(
            _derive(master, "chunk_id"),
            _derive(master, "file_digest"),
            seed or 1,
            Sealer(_derive(master, "objects")),
            _derive(master, "config_mac"),
            Sealer(_derive(master, "pack_table")),
            _derive(master, "names", SIV_KEY_SIZE),
            Sealer(_derive(master, "records")),
            _derive(master, "labels"),
        )


def config_mac(keys: Keys, document: dict) -> str:
    """The authentication code of a config document (without its code), over its canonical JSON."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return blake3.blake3(canonical, key=keys.config_mac).hexdigest()


def _kek(passphrase: bytes, kdf: dict) -> bytes:
    if kdf.get("name") != "argon2id":
        raise UnsupportedFormatError(f"store key uses unknown key derivation {kdf.get('name')!r}")
    for name, (low, high) in KDF_LIMITS.items():
        value = kdf.get(name)
        if type(value) is not int or not low <= value <= high:
            raise CorruptObjectError(
                f"store config has a damaged encryption section: "
                f"argon2id {name} must be an integer within {low}..{high}, got {value!r}"
            )
    if not isinstance(kdf.get("salt"), str):
        raise CorruptObjectError("store config has a damaged encryption section: its argon2id salt is not text")
    return Argon2id(
        salt=_unb64(kdf["salt"]),
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(passphrase)


def _wrap(master: bytes, passphrase: bytes, store_id: str, kdf_template: dict) -> dict:
    kdf = dict(kdf_template, salt=_b64(os.urandom(16)))
    # A nonce derived from the key is safe here: the fresh salt gives every wrap its own
    # key-encryption key, which seals this one message. It marks the section (see above).
    nonce = _derive(master, "wrap_nonce", WRAP_NONCE_SIZE)
    wrapped = AESGCM(_kek(passphrase, kdf)).encrypt(nonce, master, _wrap_context(store_id))
    return {"kdf": kdf, "wrapped_key": _b64(nonce + wrapped)}


def _wrap_context(store_id: str) -> bytes:
    # Binding the wrapped key to its store: a config's key section pasted into another
    # store's config does not unlock it.
    return b"chunkstore master key\x00" + store_id.encode()


def new_encryption(passphrase: bytes, store_id: str, kdf: dict | None = None) -> tuple[dict, Keys]:
    """A config section for a new encrypted store, and its keys."""
    if not passphrase:
        raise InvalidArgumentError("the passphrase is empty")
    master = os.urandom(32)
    section = {
        "scheme": SCHEME,
        "cipher": CIPHER,
        "keyed_chunker": True,
        **_wrap(master, passphrase, store_id, kdf or DEFAULT_KDF),
    }
    return section, Keys.from_master(master)


def validate_section(section: dict) -> None:
    if not isinstance(section, dict) or section.get("scheme") != SCHEME or section.get("cipher") != CIPHER:
        described = (
            f"scheme {section.get('scheme')!r}, cipher {section.get('cipher')!r}"
            if isinstance(section, dict)
            else repr(section)
        )
        raise UnsupportedFormatError(f"store is encrypted with a scheme this chunkstore does not know: {described}")
    if (
        not isinstance(section.get("kdf"), dict)
        or not isinstance(section.get("wrapped_key"), str)
        or not isinstance(section.get("config_mac", ""), str)
    ):
        raise CorruptObjectError("store config has a damaged encryption section")


def _unwrap_master(section: dict, passphrase: bytes, store_id: str) -> bytes:
    validate_section(section)
    try:
        raw = _unb64(section["wrapped_key"])
        kek = _kek(passphrase, section["kdf"])
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptObjectError(f"store config has a damaged encryption section: {error}") from None
    if len(raw) < WRAP_NONCE_SIZE + TAG_SIZE:
        raise CorruptObjectError("store config has a damaged encryption section: its wrapped key is too short")
    try:
        return AESGCM(kek).decrypt(raw[:WRAP_NONCE_SIZE], raw[WRAP_NONCE_SIZE:], _wrap_context(store_id))
    except InvalidTag:
        raise WrongKeyError("wrong passphrase or key file for this store") from None


def unlock(section: dict, passphrase: bytes, store_id: str) -> Keys:
    """The keys of an encrypted store; WrongKeyError if the passphrase does not open it."""
    return Keys.from_master(_unwrap_master(section, passphrase, store_id))


def unlock_authenticated(section: dict, passphrase: bytes, store_id: str, document: dict, code_required: bool) -> Keys:
    """The keys of an encrypted store whose config, without its code, is document; CorruptObjectError
    if the config's authentication code is wrong, or missing where code_required says or the
    key section shows (a derived wrap nonce) that one was written."""
    master = _unwrap_master(section, passphrase, store_id)
    keys = Keys.from_master(master)
    code = section.get("config_mac")
    if code is None:
        if code_required or _unb64(section["wrapped_key"])[:WRAP_NONCE_SIZE] == _derive(
            master, "wrap_nonce", WRAP_NONCE_SIZE
        ):
            raise CorruptObjectError("store config was altered: its authentication code was removed")
        return keys  # a config written before configs carried a code
    # compare_digest refuses text that is not ASCII (a hostile code may be any text).
    if not (code.isascii() and hmac.compare_digest(code, config_mac(keys, document))):
        raise CorruptObjectError(
            "store config was altered since it was written (its authentication code "
            "does not match): restore the config from a backup"
        )
    return keys


def rewrap(section: dict, old_passphrase: bytes, new_passphrase: bytes, store_id: str) -> tuple[dict, Keys]:
    """The same section with the master key wrapped under a new passphrase (fresh salt), and the
    keys (to authenticate the config that holds the new section)."""
    if not new_passphrase:
        raise InvalidArgumentError("the new passphrase is empty")
    master = _unwrap_master(section, old_passphrase, store_id)
    kdf_template = {k: v for k, v in section["kdf"].items() if k != "salt"}
    return {**section, **_wrap(master, new_passphrase, store_id, kdf_template)}, Keys.from_master(master)


KEY_EXPORT_FORMAT = "chunkstore-key-export"


def export_key(section: dict, store_id: str) -> bytes:
    """A key backup: the wrapped master key and its KDF parameters, still passphrase-protected."""
    document = {"format": KEY_EXPORT_FORMAT, "version": 1, "store_id": store_id, "encryption": section}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
