"""Schema updates of the node's SQLite database and network configuration updates.

Schema migrations (:class:`~blackhole_sync.documents.release.Migration`) come from release manifests or
from plugins (the ``blackhole_sync_migrations`` hook). :class:`SchemaMigrator` orders them into
one contiguous chain from the database's ``PRAGMA user_version`` and runs the chain **on a copy**
made with SQLite's online backup API. The original database file is never written: it stays
intact and readable until the install commits (the store renames the migrated copy over it only
after the chain succeeded, and keeps a backup in the rollback point), so a crash or a rollback
always finds a database with a consistent schema.

Configuration changes (:class:`~blackhole_sync.documents.release.ConfigChange`) apply to a JSON file
(``data/config.json``) by dotted key. A change applies only to nodes in its scope (global, a
region, a node type); one whose effective date is in the future is kept pending in
``config.pending.json`` beside it and applied by a later call once due; each applied change is
recorded in ``config.history.json`` with its old value and the end of its rollback window, so
:func:`revert_config_changes` can undo changes still inside their window. Pending changes come
due without an install too: the update agent applies them each cycle
(:meth:`NodeStore.apply_due_config_changes`). A rollback restores ``data/`` from a backup taken
before the change; :func:`keep_settled_changes` first writes into that backup every change whose
rollback window has passed, so a rollback undoes only changes still inside their window.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from .._fsutil import checkpoint, fsync_file, write_atomic
from ..documents import ConfigChange, Migration, format_time, parse_time
from ..errors import ConfigurationError, MigrationError

__all__ = [
    "ConfigResult",
    "SchemaMigrator",
    "apply_config_changes",
    "config_sidecars",
    "keep_settled_changes",
    "read_config",
    "revert_config_changes",
    "schema_version_of",
]

#: Cap on the size of the configuration JSON files read here.
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def schema_version_of(db_path: Path) -> int:
    """``PRAGMA user_version`` of a database file (0 when the file does not exist)."""
    if not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot read the schema version of {db_path}: {exc}") from exc
    finally:
        conn.close()


def _deny_attach(action: int, *_args: Any) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class SchemaMigrator:
    """Ordered, versioned migrations of one SQLite database, applied to a copy.

    ``migrations`` are the manifest's; plugins add theirs with :meth:`register`. The database's
    schema version is ``PRAGMA user_version``; each migration moves it from ``from_schema`` to
    ``to_schema``. Migrations that end at or below the current schema are already applied.
    """

    def __init__(self, db_path: Path, migrations: Iterable[Migration] = ()) -> None:
        self.db_path = Path(db_path)
        self._migrations: dict[str, Migration] = {}
        for m in migrations:
            self.register(m)

    def register(self, migration: Migration) -> None:
        """Add a migration (from a plugin). The same id twice must be the same migration."""
        known = self._migrations.get(migration.id)
        if known is not None and known != migration:
            raise MigrationError(f"two different migrations with id {migration.id!r}")
        self._migrations[migration.id] = migration

    def schema_version(self) -> int:
        return schema_version_of(self.db_path)

    def plan(self, *, from_schema: int | None = None, target: int | None = None) -> list[Migration]:
        """The chain to run from ``from_schema`` (default: the database's) up to ``target``.

        Raises :class:`MigrationError` for a gap (no migration starts where the last ended)
        or a fork (two migrations start from the same schema).
        """
        schema = self.schema_version() if from_schema is None else from_schema
        pending = [m for m in self._migrations.values() if m.to_schema > schema]
        if target is not None:
            pending = [m for m in pending if m.to_schema <= target]
        starts: dict[int, Migration] = {}
        for m in pending:
            if m.from_schema in starts:
                raise MigrationError(
                    f"migrations {starts[m.from_schema].id!r} and {m.id!r} both start at schema "
                    f"{m.from_schema}"
                )
            starts[m.from_schema] = m
        chain: list[Migration] = []
        while starts:
            step = starts.pop(schema, None)
            if step is None:
                ids = sorted(m.id for m in starts.values())
                raise MigrationError(f"no migration starts at schema {schema} (left: {ids})")
            chain.append(step)
            schema = step.to_schema
        if target is not None and chain and schema != target:
            raise MigrationError(f"migrations end at schema {schema}, not {target}")
        return chain

    def migrate_copy(
        self,
        dest: Path,
        *,
        target: int | None = None,
        on_step: Callable[[Migration], None] | None = None,
    ) -> int:
        """Copy the database to ``dest`` (must not exist), run the chain there; the new schema.

        The source database is only read (online backup API). ``dest`` is fsynced and passes
        ``PRAGMA quick_check`` and ``foreign_key_check`` before this returns; on any failure it
        is removed and :class:`MigrationError` raised.
        """
        chain = self.plan(target=target)
        if dest.exists():
            raise MigrationError(f"{dest} already exists")
        try:
            out = sqlite3.connect(dest, isolation_level=None)
            try:
                if self.db_path.exists():
                    src = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
                    try:
                        src.backup(out)
                    finally:
                        src.close()
                out.execute("PRAGMA journal_mode=DELETE")
                checkpoint("migrate.copied")
                out.set_authorizer(_deny_attach)
                for migration in chain:
                    try:
                        out.executescript(migration.sql)
                    except sqlite3.Error as exc:
                        raise MigrationError(f"migration {migration.id!r} failed: {exc}") from exc
                    out.execute(f"PRAGMA user_version = {int(migration.to_schema)}")
                    if on_step is not None:
                        on_step(migration)
                out.set_authorizer(None)
                check = out.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise MigrationError(f"migrated database fails quick_check: {check}")
                if out.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise MigrationError("migrated database violates foreign keys")
                version = int(out.execute("PRAGMA user_version").fetchone()[0])
            finally:
                out.close()
            fsync_file(dest)
            checkpoint("migrate.schema_applied")
            return version
        except sqlite3.Error as exc:
            _remove_db(dest)
            raise MigrationError(f"migrating a copy of {self.db_path.name} failed: {exc}") from exc
        except BaseException:
            _remove_db(dest)
            raise


def _remove_db(dest: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(f"{dest}{suffix}")


# -- configuration ------------------------------------------------------------------------------


@frozen
class ConfigResult:
    applied: tuple[ConfigChange, ...] = ()
    pending: tuple[ConfigChange, ...] = ()
    skipped: tuple[ConfigChange, ...] = ()  # not in this node's scope


def config_sidecars(config_path: Path) -> tuple[Path, Path]:
    """(pending, history) files kept beside a configuration file."""
    stem = config_path.name.removesuffix(".json")
    return (
        config_path.with_name(f"{stem}.pending.json"),
        config_path.with_name(f"{stem}.history.json"),
    )


def _load(path: Path, default: Any) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return default
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigurationError(f"{path} is over {MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from exc


def _dump(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n", mode=0o644)


def read_config(config_path: Path) -> dict[str, Any]:
    obj = _load(config_path, {})
    if not isinstance(obj, dict):
        raise ConfigurationError(f"{config_path} is not a JSON object")
    return obj


_ABSENT = {"$absent": True}


def _get(obj: dict[str, Any], key: str) -> Any:
    node: Any = obj
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _set(obj: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = obj
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MigrationError(f"config key {key!r}: {part!r} is not an object")
        node = child
    if value == _ABSENT:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def apply_config_changes(
    config_path: Path,
    changes: Sequence[ConfigChange],
    *,
    region: str | None,
    node_type: str | None,
    now: _dt.datetime,
    version: str | None = None,
) -> ConfigResult:
    """Apply ``changes`` (and earlier pending ones now due) to the JSON file ``config_path``.

    Changes outside this node's scope are skipped; future ones are kept pending. Each file is
    replaced atomically; the history records old values and rollback windows.
    """
    pending_path, history_path = config_sidecars(config_path)
    config = read_config(config_path)
    pending_raw = _load(pending_path, [])
    history = _load(history_path, [])
    if not isinstance(pending_raw, list) or not isinstance(history, list):
        raise ConfigurationError(f"{pending_path} / {history_path} must hold JSON lists")
    queue: list[tuple[ConfigChange, str | None]] = [
        (ConfigChange.from_dict(item["change"]), item.get("version")) for item in pending_raw
    ]
    queue.extend((c, version) for c in changes)
    applied: list[ConfigChange] = []
    still_pending: list[dict[str, Any]] = []
    skipped: list[ConfigChange] = []
    for change, from_version in queue:
        if not change.applies_to(region=region, node_type=node_type):
            skipped.append(change)
            continue
        if change.effective is not None and change.effective > now:
            entry = {"change": change.to_dict(), "version": from_version}
            if entry not in still_pending:
                still_pending.append(entry)
            continue
        old = _get(config, change.key)
        _set(config, change.key, change.value)
        applied.append(change)
        history.append(
            {
                "key": change.key,
                "old": old,
                "new": change.value,
                "applied_at": format_time(now),
                "rollback_until": format_time(now + _dt.timedelta(seconds=change.rollback_window)),
                "version": from_version,
            }
        )
    if applied:
        _dump(config_path, config)
        _dump(history_path, history)
    if still_pending or pending_path.exists():
        _dump(pending_path, still_pending)
    checkpoint("migrate.config_applied")
    return ConfigResult(
        tuple(applied),
        tuple(ConfigChange.from_dict(p["change"]) for p in still_pending),
        tuple(skipped),
    )


def revert_config_changes(
    config_path: Path, *, now: _dt.datetime, version: str | None = None
) -> list[str]:
    """Undo applied changes still inside their rollback window (newest first); their keys.

    With ``version``, only changes that came with that release. A key whose value was changed
    again since is left alone.
    """
    _pending_path, history_path = config_sidecars(config_path)
    config = read_config(config_path)
    history = _load(history_path, [])
    if not isinstance(history, list):
        raise ConfigurationError(f"{history_path} must hold a JSON list")
    reverted: list[str] = []
    keep: list[dict[str, Any]] = []
    for entry in reversed(history):
        in_window = parse_time(entry["rollback_until"]) >= now
        wanted = version is None or entry.get("version") == version
        if in_window and wanted and _get(config, entry["key"]) == entry["new"]:
            _set(config, entry["key"], entry["old"])
            reverted.append(entry["key"])
        else:
            keep.append(entry)
    if reverted:
        _dump(config_path, config)
        _dump(history_path, list(reversed(keep)))
    return reverted


def keep_settled_changes(backup_config: Path, live_config: Path, *, now: _dt.datetime) -> list[str]:
    """Write into a backup's configuration every change the live one applied whose rollback
    window has passed (by the live ``config.history.json``), so restoring the backup keeps
    them; the keys written. Changes the backup already holds are left as they are."""
    _pending, live_history_path = config_sidecars(live_config)
    history = _load(live_history_path, [])
    if not isinstance(history, list):
        raise ConfigurationError(f"{live_history_path} must hold a JSON list")
    settled = [e for e in history if parse_time(e["rollback_until"]) < now]
    if not settled:
        return []
    _bpending, backup_history_path = config_sidecars(backup_config)
    backup = read_config(backup_config)
    backup_history = _load(backup_history_path, [])
    if not isinstance(backup_history, list):
        raise ConfigurationError(f"{backup_history_path} must hold a JSON list")
    keys: list[str] = []
    for entry in settled:
        if entry in backup_history:
            continue  # the backup was taken after it: it holds it already
        _set(backup, entry["key"], entry["new"])
        backup_history.append(entry)
        keys.append(entry["key"])
    if keys:
        _dump(backup_config, backup)
        _dump(backup_history_path, backup_history)
    return keys
