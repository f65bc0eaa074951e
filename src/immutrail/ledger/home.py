"""The ledger's home folder and database URL: create a ledger, open one.

$IMMUTRAIL_HOME/ledger.key     Ed25519 checkpoint signing key (PKCS#8 PEM, mode 0600; encrypted
                               when IMMUTRAIL_LEDGER_KEY_PASSPHRASE is set at init)
$IMMUTRAIL_HOME/config.json    the database URL given at init, so later commands need no --db
$IMMUTRAIL_HOME/ledger.db      the SQLite ledger, unless the database is PostgreSQL
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import generate_ed25519, load_private_key, save_private_key
from immutrail.crypto.note import NoteSigner, is_valid_name
from immutrail.files import read_capped_text

from .errors import LedgerError, LedgerInputError, NotInitializedError, StorageError
from .ledger import Ledger
from .storage.interface import LedgerStore, redact_url

KEY_FILE = "ledger.key"
CONFIG_FILE = "config.json"
DB_FILE = "ledger.db"
PASSPHRASE_ENV = "IMMUTRAIL_LEDGER_KEY_PASSPHRASE"  # noqa: S105 - a variable name


MAX_CONFIG_BYTES = 64 * 1024
MAX_ORIGIN_LENGTH = 1024
"""A checkpoint's first line; C2SP suggests a schema-less URL, and the vkey (origin plus 54
characters) must fit a witness folder's vkey file."""


def _passphrase() -> bytes | None:
    # The bytes as given (os.environb): a passphrase need not be UTF-8 to be a passphrase.
    return os.environb.get(PASSPHRASE_ENV.encode()) or None


def check_origin(origin: str) -> str:
    """A ledger origin usable as a signed-note key name, or LedgerInputError saying why not."""
    if len(origin) > MAX_ORIGIN_LENGTH:
        raise LedgerInputError(f"--origin is longer than {MAX_ORIGIN_LENGTH} characters")
    if not is_valid_name(origin) or any(ord(c) < 0x20 or c == "\x7f" for c in origin):
        raise LedgerInputError(
            f"--origin {origin!r} cannot name a ledger: it must be non-empty and hold no '+', "
            "space or control character, e.g. example.com/log"
        )
    return origin


def resolve_db(home: Path, db: str | None) -> str:
    """The database URL: the explicit one, else the one recorded at init, else SQLite in home."""
    if db:
        return db
    config = home / CONFIG_FILE
    if config.exists():
        try:
            recorded = json.loads(read_capped_text(config, MAX_CONFIG_BYTES)).get("db")
        except (OSError, ValueError, AttributeError, RecursionError) as exc:
            raise LedgerInputError(f"{config} is not a valid immutrail config: {exc}") from exc
        if isinstance(recorded, str) and recorded:
            return recorded
    return f"sqlite:///{(home / DB_FILE).absolute()}"


def open_store(url: str, *, create: bool = False) -> LedgerStore:
    """A store for ``sqlite:///PATH`` or ``postgresql://…`` (``postgresql+psycopg://`` too)."""
    if url.startswith("sqlite:///"):
        from .storage.sqlite import SqliteStore

        return SqliteStore(Path(url.removeprefix("sqlite:///")), create=create)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        try:
            from .storage.postgres import PostgresStore
        except ImportError as exc:
            raise StorageError(
                "PostgreSQL support needs the postgres extra: pip install 'immutrail[postgres]'"
            ) from exc
        return PostgresStore(url)
    raise LedgerInputError(
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///PATH or postgresql://…"
    )


def _signer_loader(home: Path, origin: str) -> NoteSigner:
    path = home / KEY_FILE
    if not path.exists():
        raise NotInitializedError(f"no ledger key at {path}")
    try:
        key = load_private_key(path, _passphrase())
    except CryptoError as exc:
        raise LedgerInputError(f"cannot load the ledger key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerInputError(f"{path} is not an Ed25519 key")
    return NoteSigner(origin, key)


def _holds_a_ledger(url: str) -> bool:
    """Whether the database at ``url`` exists and holds a ledger (whose key init then checks)."""
    try:
        store = open_store(url)
    except LedgerError:
        return False
    try:
        return store.get_meta("vkey") is not None
    except Exception:  # whatever the backend raises: no ledger that init could use
        return False
    finally:
        store.close()


def init_ledger(
    home: Path, db: str | None = None, origin: str | None = None
) -> tuple[Ledger, bool]:
    """Create home, key and schema, or open what exists; return the ledger and whether it is new.

    Arguments are checked before anything is created, and an initialized home keeps its database:
    a failed or mistaken ``init`` must not leave a home pointing at another ledger.
    """
    if origin is not None:
        check_origin(origin)
    config = home / CONFIG_FILE
    url = resolve_db(home, db)
    if db:
        recorded = config.exists()
        previous = resolve_db(home, None) if recorded or (home / KEY_FILE).exists() else None
        if previous not in (None, db) and (recorded or not _holds_a_ledger(url)):
            raise LedgerInputError(  # a copy of its ledger, never a new one
                f"{home} already uses the database {redact_url(previous or '')}; --db may "
                "only name a database that holds this home's ledger"
            )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = home / KEY_FILE
    store = open_store(url, create=True)
    try:
        store.migrate()
        stored_origin = store.get_meta("origin")
        if not key_path.exists():
            if stored_origin is not None:
                raise LedgerInputError(
                    f"{store.url} already holds the ledger {stored_origin}, whose key is not "
                    f"in {home}: copy its {KEY_FILE} there instead of creating a new one"
                )
            save_private_key(generate_ed25519(), key_path, _passphrase())
        origin = stored_origin or origin or f"immutrail.local/{secrets.token_hex(8)}"
        signer = _signer_loader(home, origin)
        final_origin = store.put_meta_once("origin", origin)
        final_vkey = store.put_meta_once("vkey", signer.vkey)
        if final_vkey != signer.vkey:
            raise LedgerInputError(
                f"{store.url} belongs to the ledger key {final_vkey}, not to the key in {home}"
            )
        if db and not config.exists():  # recorded only once the database proved usable
            config.write_text(json.dumps({"db": db}, indent=2) + "\n", encoding="utf-8")
            config.chmod(0o600)
    except BaseException:
        store.close()
        raise
    created = stored_origin is None
    return Ledger(
        store, final_origin, final_vkey, lambda: _signer_loader(home, final_origin)
    ), created


def open_ledger(home: Path, db: str | None = None) -> Ledger:
    url = resolve_db(home, db)
    store = open_store(url)
    try:
        store.check_schema()
        origin, vkey = store.get_meta("origin"), store.get_meta("vkey")
    except BaseException:
        store.close()
        raise
    if origin is None or vkey is None:
        store.close()
        raise NotInitializedError(f"{store.url} holds no ledger")
    loader = (lambda: _signer_loader(home, origin)) if (home / KEY_FILE).exists() else None
    return Ledger(store, origin, vkey, loader)
