"""Plain SQL for the registry on the measured paths: create, close, flush.

Building a model instance and compiling a query cost the ORM several times what the
database spent on these one-row writes and the quota count. These helpers keep the ORM's own value
conversions (each field's ``get_db_prep_save``), so rows are stored exactly as the
ORM would store them, on SQLite and PostgreSQL alike; reads stay with the ORM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import connection, transaction

from envs_api.models import EnvInstance

_META = EnvInstance._meta
ANY_OWNER: Any = object()  # update_active(): whoever owns the row


def _column(name: str) -> str:
    return connection.ops.quote_name(_META.get_field(name).column)


def _prep(name: str, value: Any) -> Any:
    return _META.get_field(name).get_db_prep_save(value, connection)


def _table() -> str:
    return connection.ops.quote_name(_META.db_table)


def insert(**values: Any) -> None:
    """INSERT one row; fields not given take their model defaults."""
    fields = [f for f in _META.concrete_fields if not f.primary_key]
    row = {
        f.name: values[f.name] if f.name in values else f.get_default() for f in fields
    }
    columns = ", ".join(_column(name) for name in row)
    marks = ", ".join(["%s"] * len(row))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table()} ({columns}) VALUES ({marks})",
            [_prep(name, value) for name, value in row.items()],
        )


def update_active(
    instance_id: str, values: dict[str, Any], owner: Any = ANY_OWNER
) -> int:
    """UPDATE the active row of ``instance_id`` (and ``owner``, if given); return count."""
    sets = ", ".join(f"{_column(name)} = %s" for name in values)
    params = [_prep(name, value) for name, value in values.items()]
    where = f"{_column('instance_id')} = %s AND {_column('status')} = %s"
    params += [instance_id, EnvInstance.Status.ACTIVE]
    if owner is not ANY_OWNER:
        where += f" AND {_column('owner')} " + ("IS NULL" if owner is None else "= %s")
        params += [] if owner is None else [owner]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {_table()} SET {sets} WHERE {where}", params)
        return int(cursor.rowcount)


def update_many_active(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """The same UPDATE for many active rows (their values share one set of names)."""
    if not rows:
        return
    names = list(rows[0][1])
    sets = ", ".join(f"{_column(name)} = %s" for name in names)
    where = f"{_column('instance_id')} = %s AND {_column('status')} = %s"
    params = [
        [
            *(_prep(name, values[name]) for name in names),
            instance_id,
            EnvInstance.Status.ACTIVE,
        ]
        for instance_id, values in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {_table()} SET {sets} WHERE {where}", params)


def active_counts(owner: int | None) -> tuple[int, int]:
    """Envs in active rows on the server, and in those of ``owner`` (None:
    anonymous), in one query: a vector instance counts its num_envs."""
    owner_column = _column("owner")
    mine = f"{owner_column} IS NULL" if owner is None else f"{owner_column} = %s"
    size = f"COALESCE({_column('num_envs')}, 1)"
    sql = (
        f"SELECT COALESCE(SUM({size}), 0), COALESCE(SUM(CASE WHEN {mine} THEN {size} "
        f"ELSE 0 END), 0) FROM {_table()} WHERE {_column('status')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [*([] if owner is None else [owner]), EnvInstance.Status.ACTIVE]
        )
        total, own = cursor.fetchone()
    return int(total), int(own)


CREATE_LOCK_KEY = int.from_bytes(b"gymquota", "big") >> 1  # pg_advisory_xact_lock


@contextlib.contextmanager
def creating(across_processes: bool) -> Iterator[None]:
    """Hold creates one at a time across every API process (quotas are counted,
    then the row written): a transaction holding PostgreSQL's advisory lock, or
    SQLite's write lock. One process (the local backend) needs nothing more than
    its own thread lock."""
    if not across_processes:
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CREATE_LOCK_KEY])
        else:  # a write that changes nothing takes SQLite's write lock
            cursor.execute(f"UPDATE {_table()} SET {_column('host')} = '' WHERE 1 = 0")
        yield


def move(instance_id: str, old: str, new: str) -> bool:
    """Record that the instance now lives at ``new`` (a host), if the row still says
    ``old``: of two API processes rebuilding one instance, one wins."""
    return bool(
        EnvInstance.objects.filter(instance_id=instance_id, host=old).update(host=new)
    )


def update(instance_id: str, values: dict[str, Any]) -> int:
    """UPDATE the row of ``instance_id`` whatever its status; return the count."""
    sets = ", ".join(f"{_column(name)} = %s" for name in values)
    params = [_prep(name, value) for name, value in values.items()]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET {sets} WHERE {_column('instance_id')} = %s",
            [*params, instance_id],
        )
        return int(cursor.rowcount)
