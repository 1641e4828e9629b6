"""The SQL of whole-table work (``fastgw store copy``, retention, erasure), written once for both
backends as usage_sql.py is: ``mark`` is the driver's placeholder (``?`` for SQLite, ``%s`` for
psycopg). Table and column names come from store/tables.py, never from a request; values only ever
travel as parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def select_rows_sql(
    table: str, columns: Sequence[str], where: tuple[str, Sequence[Any]] | None, mark: str
) -> tuple[str, tuple[Any, ...]] | None:
    """Every row's ``columns``, in their order, or those whose ``where[0]`` is one of ``where[1]``;
    None when that list is empty (no row can match)."""
    names = ", ".join(columns)
    if where is None:
        return f"SELECT {names} FROM {table} ORDER BY {names}", ()
    column, values = where
    if not values:
        return None
    marks = ", ".join([mark] * len(values))
    return f"SELECT {names} FROM {table} WHERE {column} IN ({marks}) ORDER BY {names}", tuple(values)


def replace_values_sql(table: str, column: str, count: int, mark: str) -> str:
    """Sets ``column`` (the first parameter) where it holds one of ``count`` old values (the rest)."""
    marks = ", ".join([mark] * count)
    return f"UPDATE {table} SET {column} = {mark} WHERE {column} IN ({marks}) RETURNING 1"


def insert_rows_sql(table: str, columns: Sequence[str], mark: str) -> str:
    """One row's insert, skipping a row whose key is already there (a repeated copy adds nothing)."""
    marks = ", ".join([mark] * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def delete_before_sql(table: str, column: str, mark: str) -> str:
    return f"DELETE FROM {table} WHERE {column} < {mark} RETURNING 1"
