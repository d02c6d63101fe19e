"""The one way new rows reach the store: a single insert, or the same inserts batched inside `batched()`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import JSON, event, func, select
from sqlmodel import SQLModel

BATCH = 5000


class Row:
    """A row written in a batch, as the code that made it sees it: its columns as attributes. (An
    ORM object per row would cost more than the inserts themselves at 100,000 identities.)"""

    __slots__ = ("__dict__",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.__dict__ = row  # the row itself, not a copy


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
        self._converters: dict[tuple, Any] = {}

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
        if self.depth:  # as append() buffers it, without a second call for each of a bulk apply's rows
            rows = self.pending.setdefault(model, [])
            rows.append(row)
            if len(rows) >= BATCH:
                self.flush()
            return Row(row)
        self.session.flush()  # objects the ORM holds back may be this row's parents
        self._write(model, [row])
        pk_name = model.__table__.primary_key.columns.keys()[0]
        return self.session.get(model, row[pk_name]) if pk_name in row else None

    def append(self, model, row: dict[str, Any]) -> None:  # noqa: ANN001
        """Write or buffer a row nobody reads back (an activity-log entry)."""
        if not self.depth:
            self.session.flush()
            self._write(model, [row])
            return
        rows = self.pending.setdefault(model, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self.flush()

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
        convert = self._converters.get((model, names))
        if convert is None:
            convert = self._converters[(model, names)] = _converter(table, names, conn.dialect)
        postgres = conn.dialect.name == "postgresql"
        if postgres:  # the server's own bulk insert
            sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
        else:
            sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        cursor = conn.connection.driver_connection.cursor()
        try:
            for start in range(0, len(rows), BATCH):
                params = convert(rows[start:start + BATCH])
                if postgres:
                    with cursor.copy(sql) as copy:
                        for v in params:
                            copy.write_row(v)
                else:
                    cursor.executemany(sql, params)
            if postgres and "pk" in names and "pk" in table.columns and table.columns["pk"].autoincrement is not False:
                # keys given here leave the table's sequence behind: the ORM's next insert takes the one after them
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'pk'), "
                               f"(SELECT max(pk) FROM {table.name}))")
        finally:
            cursor.close()


def _converter(table, names: tuple[str, ...], dialect):  # noqa: ANN001, ANN202
    """rows -> parameter tuples, each column converted by SQLAlchemy's own conversion of a Python value for
    this database (None left as it is). Made once per table and set of columns, as one compiled function:
    a loop over the columns of every row cost more than the inserts themselves at 100,000 identities.
    A converted column remembers, within a batch, its last value and what it became: a batch stamps its rows
    with one time, and most rows have the same empty tags (a JSON column's empty mapping is one value)."""
    namespace: dict[str, Any] = {"_UNSET": _UNSET}
    parts, memos = [], []
    for i, name in enumerate(names):
        column = table.columns[name]
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            parts.append(f"r[{name!r}]")
            continue
        namespace[f"p{i}"] = process
        memos.append(f"i{i} = o{i} = _UNSET")  # the last value in, and what it became
        same = f"(v{i} := r[{name!r}]) is i{i}"
        if isinstance(column.type, JSON):
            same += f" or (v{i}.__class__ is dict and not v{i} and i{i} == {{}})"
        parts.append(f"(o{i} if {same} else (o{i} := (None if (i{i} := v{i}) is None else p{i}(v{i}))))")
    source = "def convert(rows):\n" + "".join(f"    {m}\n" for m in memos) + \
        f"    return [({', '.join(parts)},) for r in rows]\n"
    exec(compile(source, f"<insert into {table.name}>", "exec"), namespace)  # noqa: S102 - column names of mi's own schema
    return namespace["convert"]


_UNSET = object()


def _dependency_order() -> list:
    return SQLModel.metadata.sorted_tables
