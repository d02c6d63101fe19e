"""The one way new rows reach the store: a single insert, or the same inserts batched inside `batched()`."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import event, func, select

BATCH = 5000


class Row:
    """A row written in a batch, as the code that made it sees it: its columns as attributes. (An
    ORM object per row would cost more than the inserts themselves at 100,000 identities.)"""

    __slots__ = ("__dict__",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__.update(row)


class Writer:
    """Inserts rows on the transaction's own connection, values converted by each column's
    SQLAlchemy type. Outside `batched()` a row is written at once and its ORM object returned; inside,
    rows wait in per-table buffers and go to SQLite BATCH at a time, parents first. Any other statement
    on the connection first writes what is buffered, so no query ever misses a row made before it."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self.session = session
        self.pending: dict[Any, list[dict[str, Any]]] = {}
        self.depth = 0
        self._flushing = False
        self._next_pk: dict[Any, int] = {}
        self._converters: dict[tuple, list] = {}

    # -- keys ----------------------------------------------------------------------------------------

    def next_pk(self, model) -> int:  # noqa: ANN001
        """Integer keys are given here, not by SQLite, so that a buffered child can name its parent."""
        if model not in self._next_pk:
            self._next_pk[model] = (self.session.execute(select(func.max(model.pk))).scalar() or 0) + 1
        pk = self._next_pk[model]
        self._next_pk[model] = pk + 1
        return pk

    # -- writing -------------------------------------------------------------------------------------

    def insert(self, model, row: dict[str, Any]):  # noqa: ANN001, ANN201
        """Write (or, batched, buffer) one row; returns its ORM object, or a `Row` while batched."""
        if self.depth:
            rows = self.pending.setdefault(model, [])
            rows.append(row)
            if len(rows) >= BATCH:
                self.flush()
            return Row(row)
        self.session.flush()  # objects the ORM holds back may be this row's parents
        self._write(model, [row])
        pk_name = model.__table__.primary_key.columns.keys()[0]
        return self.session.get(model, row[pk_name]) if pk_name in row else None

    def flush(self) -> None:
        """Buffered rows in the order of the schema's foreign keys: parents first."""
        if self._flushing or not self.pending:
            return
        self._flushing = True
        try:
            for table in _dependency_order():
                for model in [m for m in self.pending if m.__table__ is table]:
                    self._write(model, self.pending.pop(model))
        finally:
            self._flushing = False

    @contextmanager
    def batched(self) -> Iterator["Writer"]:
        """Buffer inserts until the block ends (or a statement needs them written first)."""
        conn = self.session.connection()
        self.session.flush()
        if self.depth == 0:
            event.listen(conn, "before_cursor_execute", self._before_statement)
        self.depth += 1
        try:
            yield self
            self.flush()
        finally:
            self.depth -= 1
            if self.depth == 0:
                event.remove(conn, "before_cursor_execute", self._before_statement)
                self.pending.clear()

    def _before_statement(self, *_args) -> None:  # noqa: ANN002
        self.flush()

    def _write(self, model, rows: list[dict[str, Any]]) -> None:  # noqa: ANN001
        conn = self.session.connection()
        table = model.__table__
        names = tuple(rows[0])
        columns = [table.columns[n] for n in names]
        convert = self._converters.get((model, names))
        if convert is None:
            convert = self._converters[(model, names)] = [c.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in columns]
        stamps: dict[int, Any] = {}
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        cursor = conn.connection.driver_connection.cursor()
        try:
            for start in range(0, len(rows), BATCH):
                cursor.executemany(sql, [tuple(_value(r[n], p, stamps) for n, p in zip(names, convert))
                                         for r in rows[start:start + BATCH]])
        finally:
            cursor.close()


def _dependency_order() -> list:
    from sqlmodel import SQLModel

    return SQLModel.metadata.sorted_tables


def _value(value: Any, process, stamps: dict[int, Any]) -> Any:  # noqa: ANN001
    if process is None or value is None:
        return value
    if type(value) is datetime:  # one clock reading stamps many rows of a batch: convert it once
        done = stamps.get(id(value))
        if done is None:
            done = stamps[id(value)] = process(value)
        return done
    return process(value)
