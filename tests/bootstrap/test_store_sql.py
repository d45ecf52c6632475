"""The SQL behind GET /api/next and POST /api/decisions stays cheap at 1,000,000 tasks.

SQLite's plans do not depend on the table sizes (no ANALYZE), so a small project
shows the plan a large one gets: every hot statement finds its rows through an
index, the labeler's own leases are found from the assignment side, a decisions
batch reads once, and a decision on a leased task rewrites only the task's outcome.
"""

import contextlib
import sqlite3

from sqlalchemy import event, select

from keras_fgvc.bootstrap import db as schema
from tests.bootstrap.conftest import Clock, make_project


def _statements(store):
    """A list that collects (sql, parameters) of every statement `store` runs."""
    seen = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _collect(conn, cursor, sql, parameters, context, executemany):
        seen.append((" ".join(sql.split()), parameters[0] if executemany else parameters))

    return seen


def _plan(path, sql, parameters):
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, parameters)]


def test_hot_statements_are_index_driven(tmp_path):
    path = str(tmp_path / "project.db")
    clock = Clock()
    store, info = make_project(path, str(tmp_path), n_pool=30, lease_seconds=60, clock=clock)
    seen = _statements(store)
    category = info["categories"][0].name
    for labeler, kwargs in (("ann", {}), ("bob", {"category": category})):
        tasks = store.next_tasks(labeler, 3, **kwargs)
        assert store.next_tasks(labeler, 3, **kwargs) == tasks  # the own-leases query
        store.record_decisions([{"task_id": t["task_id"], "labeler": labeler,
                                 "decision": "accept"} for t in tasks])
    store.undo(tasks[0]["task_id"], "bob")
    store.next_tasks("cy", 2)
    clock.now += 120  # cy's leases lapse: the next call gives them back to the queue
    store.next_tasks("dee", 2)
    plans = {sql: _plan(path, sql, parameters) for sql, parameters in seen
             if not sql.startswith(("BEGIN", "INSERT"))}
    own = [plan for sql, plan in plans.items() if "FROM task JOIN assignment" in sql]
    assert len(own) == 2  # with and without a category
    for plan in own:  # never from a task index: that walks every pending task
        assert plan[0].startswith("SEARCH assignment USING INDEX ix_assignment_labeler"), plan
    for sql, plan in plans.items():
        for line in plan:
            if line.split()[1] in ("task", "assignment", "decision", "member"):
                assert line.startswith("SEARCH") and (" INDEX " in line or "PRIMARY KEY" in line
                                                      or "rowid" in line), (sql, plan)
    assert any("assignment.assigned_at <" in sql for sql in plans)  # the lapse ran
    store.close()


def test_a_decisions_batch_reads_once_and_sets_only_outcomes(tmp_path):
    path = str(tmp_path / "project.db")
    store, _ = make_project(path, str(tmp_path), n_pool=12)
    tasks = store.next_tasks("ann", 5)
    seen = _statements(store)
    store.record_decisions([{"task_id": t["task_id"], "labeler": "ann", "decision": "reject",
                             "seconds": 1.0} for t in tasks])
    assert sum(sql.startswith("SELECT") for sql, _ in seen) == 1
    task_updates = [sql for sql, _ in seen if sql.startswith("UPDATE task")]
    # taken and open stay (the tasks were leased): the queue indexes are not rewritten.
    assert task_updates == ["UPDATE task SET outcome=? WHERE task.id = ?"]
    # A decision without a lease (a script) takes a slot: taken and open change too.
    del seen[:]
    other = next(task for task, outcome in store.outcomes(1) if outcome is None)
    store.record_decisions([{"task_id": other["task_id"], "labeler": "bob",
                             "decision": "accept"}])
    assert any(sql.startswith("UPDATE task SET taken=") for sql, _ in seen)
    with store._read() as session:
        row = session.execute(select(schema.Task).where(
            schema.Task.id == other["task_id"])).scalar_one()
    assert (row.taken, row.open, row.outcome) == (1, False, "accept")
    store.close()


def test_tasks_are_stored_in_queue_order(db, tmp_path):
    store, _ = make_project(db, str(tmp_path), n_pool=40)
    with store._read() as session:
        keys = session.scalars(select(schema.Task.order_key).order_by(schema.Task.id)).all()
    assert len(keys) == 40 and keys == sorted(keys)
    # So a batch of the queue is a run of neighbouring rows (and pages).
    ids = [t["task_id"] for t in store.next_tasks("ann", 10)]
    assert ids == list(range(min(ids), min(ids) + 10))
    store.close()
