"""The one insert path: a single create and a batched bulk of creates write the same rows, a query
inside a batch sees what was buffered before it, and a failed transaction leaves nothing."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mi_cli.errors import ValidationError
from mi_cli.models import ActivityLog, Attachment, ServicePrincipal, UserAssignedIdentity
from mi_cli.services import groups, identities, resources


def _rows(ctx, model, *skip: str) -> list[dict]:
    out = []
    for row in ctx.session.exec(select(model).order_by(model.pk if hasattr(model, "pk") else model.id)).all():
        out.append({k: v for k, v in row.model_dump().items() if k not in skip})
    return out


def _make(store, batched: bool, db_suffix: str = "") -> dict:
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        now = ctx.now()
        ctx.clock = lambda: now
        with ctx.writer.batched() if batched else _nothing():
            for i in range(3):
                identities.create_user_assigned(ctx, g, f"id-{i}", tags={"n": str(i)}, principal_id=f"0000000{i}-0000-4000-8000-000000000000",
                                                client_id=f"0000000{i}-0000-4000-8000-00000000000c")
            vm = resources.create(ctx, g, "vm1", "vm", user_assigned=["id-0", "id-2"])
        return {"uamis": _rows(ctx, UserAssignedIdentity, "created_at"), "sps": _rows(ctx, ServicePrincipal, "created_at", "tenant_id"),
                "attachments": _rows(ctx, Attachment, "created_at"), "vm": vm.arm_id.rsplit("/", 1)[-1],
                "log": [(e.operation, e.target.split("/resourceGroups/")[-1].split("/resourcegroups/")[-1])
                        for e in ctx.session.exec(select(ActivityLog).order_by(ActivityLog.pk)).all()
                        if not e.operation.startswith("Microsoft.Resources/")]}


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.fixture
def two_stores(tmp_path):
    from contextlib import contextmanager

    from mi_cli.services import Ctx
    from mi_cli.store import open_store

    def factory(name):
        opened = open_store(tmp_path / name)

        @contextmanager
        def tx():
            with opened.transaction(write=True) as session:
                yield Ctx(session)

        return opened, tx

    made = [factory("single.db"), factory("bulk.db")]
    yield [tx for _, tx in made]
    for opened, _ in made:
        opened.close()


def test_one_by_one_and_batched_write_the_same_rows(two_stores):
    single, bulk = two_stores
    one, many = _make(single, batched=False), _make(bulk, batched=True)
    assert [u["name"] for u in one["uamis"]] == ["id-0", "id-1", "id-2"]
    for part in ("uamis", "attachments"):
        assert [{k: v for k, v in r.items() if k not in ("arm_id", "id_key", "identity_id", "identity_key")} for r in one[part]] == \
            [{k: v for k, v in r.items() if k not in ("arm_id", "id_key", "identity_id", "identity_key")} for r in many[part]]
    assert [{k: v for k, v in r.items() if k != "mi_resource_id"} for r in one["sps"]] == \
        [{k: v for k, v in r.items() if k != "mi_resource_id"} for r in many["sps"]]
    assert one["log"] == many["log"]


def test_a_query_inside_a_batch_sees_the_rows_buffered_before_it(store):
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        with ctx.writer.batched():
            made = identities.create_user_assigned(ctx, g, "buffered")
            assert ctx.writer.pending  # not written yet
            found = identities.user_assigned_by_id(ctx, made.arm_id)  # a statement: the batch goes first
            assert found is not None and found.principal_id == made.principal_id
            assert not ctx.writer.pending


def test_a_failed_batch_leaves_nothing(store):
    with store() as ctx:
        groups.create(ctx, "rg", "westeurope")
    with pytest.raises(ValidationError, match="Resource name .no spaces allowed. is invalid"):
        with store() as ctx:
            g = groups.get(ctx, "rg")
            with ctx.writer.batched():
                identities.create_user_assigned(ctx, g, "fine")
                identities.create_user_assigned(ctx, g, "no spaces allowed")
    with store() as ctx:
        assert ctx.session.exec(select(UserAssignedIdentity)).all() == []
        assert ctx.session.exec(select(ServicePrincipal)).all() == []
