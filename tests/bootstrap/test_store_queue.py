"""The Store's review queue on SQLite and on a real PostgreSQL server: leases, decisions,
undo, overlap, majority vote, kappa, ingest, selection quality, status, export."""

import threading
import time

import pytest
from sqlalchemy import func, select, text

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap import stats
from keras_fgvc.bootstrap.store import open_store
from tests.bootstrap.conftest import Clock, make_project


def _decide(store, labeler, tasks, decision="accept"):
    return store.record_decisions([{"task_id": t["task_id"], "labeler": labeler,
                                    "decision": decision, "seconds": 1.0} for t in tasks])


def _rows(store, model, *where):
    with store._read() as session:
        return session.scalars(select(model).where(*where)).all()


def test_a_decision_is_atomic_and_idempotent(project):
    store, _ = project
    task = store.next_tasks("ann", 1)[0]
    assert store.record_decisions([{"task_id": task["task_id"], "labeler": "ann",
                                    "decision": "accept", "seconds": 2.5}]) == 1
    assert store.record_decisions([{"task_id": task["task_id"], "labeler": "ann",
                                    "decision": "reject", "seconds": 1.0}]) == 1
    (decision,) = _rows(store, schema.Decision)
    assert (decision.decision, decision.seconds, decision.model_version) == ("reject", 1.0,
                                                                             "r1-test")
    (lease,) = _rows(store, schema.Assignment, schema.Assignment.task_id == task["task_id"])
    assert lease.decided and lease.labeler == "ann"
    assert _rows(store, schema.Task, schema.Task.id == task["task_id"])[0].outcome == "reject"


@pytest.mark.parametrize("bad,message", [
    ({"task_id": 99999, "labeler": "ann", "decision": "accept", "seconds": 1}, "unknown task"),
    ({"task_id": "x", "labeler": "ann", "decision": "accept", "seconds": 1}, "integer"),
    ({"labeler": "ann", "decision": "accept"}, "no 'task_id'"),
    ({"task_id": 1, "labeler": "", "decision": "accept"}, "labeler"),
    ({"task_id": 1, "labeler": "ann", "decision": "maybe"}, "decision must be one of"),
    ({"task_id": 1, "labeler": "ann", "decision": "accept", "seconds": -1}, ">= 0"),
    ({"task_id": 1, "labeler": "ann", "decision": "accept", "sconds": 1}, "unknown fields"),
    ({"task_id": 2, "labeler": "ann", "decision": "reject"}, "twice"),
    ("accept", "must be an object")])
def test_a_malformed_batch_writes_nothing(project, bad, message):
    store, _ = project
    tasks = store.next_tasks("ann", 3)
    good = [{"task_id": t["task_id"], "labeler": "ann", "decision": "accept", "seconds": 1}
            for t in tasks[:2]]
    if isinstance(bad, dict) and bad.get("task_id") == 2:
        bad = dict(bad, task_id=tasks[0]["task_id"])
    with pytest.raises(ValueError, match=message):
        store.record_decisions(good + [bad])
    assert store.count("decision") == 0
    assert all(t.outcome is None for t in _rows(store, schema.Task))
    assert not any(a.decided for a in _rows(store, schema.Assignment))
    with pytest.raises(ValueError, match="must be a list"):
        store.record_decisions({"decisions": good})


def _label_all(store, labeler, seen, barrier, n=3):
    barrier.wait()
    deadline = time.monotonic() + 60
    while True:
        tasks = store.next_tasks(labeler, n)
        if not tasks:
            # On PostgreSQL the queue skips tasks another labeler's decision has locked
            # (SKIP LOCKED): an empty page while a task still has a free slot this labeler
            # has not filled means "try again", not "done".
            a, t = schema.Assignment, schema.Task
            mine = select(a.task_id).where(a.labeler == labeler)
            with store._read() as session:
                left = session.scalar(select(func.count()).select_from(t).where(
                    t.open.is_(True), t.id.not_in(mine)))
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.01)
            continue
        seen[labeler].extend(t["task_id"] for t in tasks)
        _decide(store, labeler, tasks)


@pytest.mark.parametrize("shared_store", [True, False])
def test_two_labelers_never_get_the_same_task(project, shared_store):
    store, info = project
    labelers = ["ann", "bob", "cy", "dee"]
    stores = {name: store if shared_store else open_store(store.engine.url.render_as_string(
        hide_password=False)) for name in labelers}
    seen = {name: [] for name in labelers}
    barrier = threading.Barrier(len(labelers))
    threads = [threading.Thread(target=_label_all, args=(stores[n], n, seen, barrier))
               for n in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    handed = [task_id for name in labelers for task_id in seen[name]]
    assert len(handed) == len(set(handed)) == len(info["tasks"])
    assert sum(len(seen[n]) > 0 for n in labelers) >= 2
    decisions = _rows(store, schema.Decision)
    assert len(decisions) == len(info["tasks"])
    assert all(d.labeler in labelers and d.task_id in seen[d.labeler] for d in decisions)
    if not shared_store:
        for name in labelers:
            stores[name].close()


def test_overlap_two_gives_each_task_to_two_labelers(db, tmp_path):
    store, info = make_project(db, str(tmp_path), n_pool=24, overlap=2)
    seen = {name: [] for name in ("ann", "bob", "cy")}
    # ann and bob label every task; cy finds nothing left.
    ann, bob = store.next_tasks("ann", 100), store.next_tasks("bob", 100)
    assert len(ann) == len(bob) == 24 and store.next_tasks("cy", 5) == []
    seen["ann"], seen["bob"] = [t["task_id"] for t in ann], [t["task_id"] for t in bob]
    assert sorted(seen["ann"]) == sorted(seen["bob"])
    ann_votes = ["accept" if i % 3 else "reject" for i in range(24)]
    bob_votes = ["accept" if i % 4 else "reject" for i in range(24)]
    store.record_decisions([{"task_id": t["task_id"], "labeler": "ann", "decision": v}
                            for t, v in zip(ann, ann_votes)])
    outcomes = dict((task["task_id"], outcome) for task, outcome in store.outcomes(1))
    assert set(outcomes.values()) == {None}  # one vote of two: pending
    by_task = dict(zip(seen["ann"], ann_votes))
    bob_by_task = dict(zip(seen["ann"], bob_votes))
    store.record_decisions([{"task_id": t["task_id"], "labeler": "bob",
                             "decision": bob_by_task[t["task_id"]]} for t in bob])
    for task, outcome in store.outcomes(1):
        a, b = by_task[task["task_id"]], bob_by_task[task["task_id"]]
        assert outcome == (a if a == b else "unsure")
        leases = _rows(store, schema.Assignment, schema.Assignment.task_id == task["task_id"])
        assert sorted((x.slot, x.labeler) for x in leases) == [(0, "ann"), (1, "bob")]
    (pair,) = store.agreement()["pairs"]
    a = [by_task[t] for t in sorted(by_task)]
    b = [bob_by_task[t] for t in sorted(by_task)]
    assert pair["labelers"] == ["ann", "bob"] and pair["n"] == 24
    assert pair["kappa"] == pytest.approx(stats.cohen_kappa(a, b))
    assert pair["observed_agreement"] == pytest.approx(sum(x == y for x, y in zip(a, b)) / 24)
    store.close()


def test_overlap_two_with_three_labelers_at_once(db, tmp_path):
    store, info = make_project(db, str(tmp_path), n_pool=30, overlap=2)
    seen = {name: [] for name in ("ann", "bob", "cy")}
    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=_label_all, args=(store, n, seen, barrier, 2))
               for n in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for task_id in (t.id for t in _rows(store, schema.Task)):
        holders = [name for name in seen if task_id in seen[name]]
        assert len(holders) == 2, (task_id, holders)
        assert all(seen[name].count(task_id) == 1 for name in holders)
    assert store.count("decision") == 60
    assert all(t.outcome == "accept" and not t.open for t in _rows(store, schema.Task))
    store.close()


def test_an_abandoned_lease_goes_to_someone_else(db, tmp_path):
    clock = Clock()
    store, _ = make_project(db, str(tmp_path), n_pool=6, lease_seconds=60, clock=clock)
    (first,) = store.next_tasks("ann", 1)
    assert store.next_tasks("ann", 1) == [first]  # ann's own lease comes back to her
    clock.now += 30
    (other,) = store.next_tasks("bob", 1)
    assert other["task_id"] != first["task_id"]
    clock.now += 40  # ann's lease (taken at +0) has lapsed; bob's (at +30) has not
    assert store.next_tasks("cy", 1)[0]["task_id"] == first["task_id"]
    assert store.next_tasks("bob", 1) == [other]
    # A late decision from ann is not recorded: the task's one slot is cy's now, and a
    # vote beyond `overlap` could turn cy's outcome into a tie.
    late = {"task_id": first["task_id"], "labeler": "ann", "decision": "accept"}
    report = store.record_decisions([late], report=True)
    assert report["recorded"] == 0 and [s["task_id"] for s in report["skipped"]] == [
        first["task_id"]]
    assert "went to other labelers" in report["skipped"][0]["reason"]
    assert _rows(store, schema.Decision, schema.Decision.task_id == first["task_id"]) == []
    assert _decide(store, "cy", [first], "reject") == 1
    assert store.record_decisions([late]) == 0  # after cy's decision too
    (task,) = _rows(store, schema.Task, schema.Task.id == first["task_id"])
    assert (task.taken, task.outcome) == (1, "reject")
    assert [a.labeler for a in _rows(store, schema.Assignment, schema.Assignment.task_id ==
                                     first["task_id"])] == ["cy"]
    store.close()


def test_a_decision_without_a_lease_takes_a_lapsed_lease_not_yet_reclaimed(db, tmp_path):
    """overlap 1: bob posts on a task leased to ann. While ann's lease is live it is skipped;
    once it has lapsed (no queue request has reclaimed it yet) bob's decision takes its
    slot, and ann's late one is skipped, as if the queue had given the task to bob."""
    clock = Clock()
    store, _ = make_project(db, str(tmp_path), n_pool=6, lease_seconds=60, clock=clock)
    (task,) = store.next_tasks("ann", 1)
    bob = {"task_id": task["task_id"], "labeler": "bob", "decision": "reject"}
    clock.now += 59  # ann's lease is live
    report = store.record_decisions([bob], report=True)
    assert report["recorded"] == 0 and report["skipped"][0]["labeler"] == "bob"
    clock.now += 2  # lapsed, and nobody asked the queue since
    assert store.record_decisions([bob], report=True) == {"recorded": 1, "skipped": []}
    late = {"task_id": task["task_id"], "labeler": "ann", "decision": "accept"}
    report = store.record_decisions([late], report=True)
    assert report["recorded"] == 0 and report["skipped"][0]["labeler"] == "ann"
    (row,) = _rows(store, schema.Task, schema.Task.id == task["task_id"])
    assert (row.taken, row.open, row.outcome) == (1, False, "reject")
    assert [(a.labeler, a.slot, a.decided) for a in _rows(
        store, schema.Assignment, schema.Assignment.task_id == task["task_id"])] == [
        ("bob", 0, True)]
    assert store.next_tasks("ann", 1)[0]["task_id"] != task["task_id"]
    store.close()


def test_a_decision_without_a_lease_takes_a_free_slot_or_is_skipped(project):
    """overlap 1: a script's decision on an untouched task is recorded (it takes the slot);
    one from a labeler the task was never handed, after ann decided it, is skipped and
    leaves ann's outcome, in the same batch as a recorded one."""
    store, _ = project
    (mine,) = store.next_tasks("ann", 1)
    assert _decide(store, "ann", [mine]) == 1
    free = max(t.id for t in _rows(store, schema.Task) if t.id != mine["task_id"])
    report = store.record_decisions([
        {"task_id": mine["task_id"], "labeler": "bob", "decision": "reject"},
        {"task_id": free, "labeler": "bob", "decision": "reject"}], report=True)
    assert report["recorded"] == 1 and [(x["task_id"], x["labeler"]) for x in
                                        report["skipped"]] == [(mine["task_id"], "bob")]
    outcome = {t.id: (t.taken, t.outcome) for t in _rows(store, schema.Task)}
    assert outcome[mine["task_id"]] == (1, "accept") and outcome[free] == (1, "reject")
    assert store.record_decisions([]) == 0
    assert store.record_decisions([], report=True) == {"recorded": 0, "skipped": []}


def test_undo(project):
    store, _ = project
    first, second = store.next_tasks("ann", 2)
    _decide(store, "ann", [first, second], "reject")
    assert store.undo(first["task_id"], "ann") is True
    assert store.undo(first["task_id"], "ann") is False
    assert store.undo(first["task_id"], "bob") is False
    assert [d.task_id for d in _rows(store, schema.Decision)] == [second["task_id"]]
    assert _rows(store, schema.Task, schema.Task.id == first["task_id"])[0].outcome is None
    assert store.next_tasks("ann", 1) == [first]  # the undone task is hers again, first
    with pytest.raises(ValueError, match="unknown task_id 424242"):
        store.undo(424242, "ann")


def test_ingest(project):
    store, info = project
    tasks = {t["task_id"]: t for t in store.next_tasks("ann", 100)}
    rows = {t.id: t for t in _rows(store, schema.Task)}
    selected = [i for i in sorted(rows) if rows[i].selected]
    unselected = [i for i in sorted(rows) if not rows[i].selected]
    plan = {selected[0]: "accept", selected[1]: "accept", selected[2]: "reject",
            unselected[0]: "reject", unselected[1]: "accept", selected[3]: "unsure"}
    store.record_decisions([{"task_id": i, "labeler": "ann", "decision": d}
                            for i, d in plan.items()])
    with pytest.raises(ValueError, match=f"{len(rows) - len(plan)} pending"):
        store.ingest(1)
    store.record_decisions([{"task_id": i, "labeler": "ann", "decision": "unsure"}
                            for i in tasks if i not in plan])
    summary = store.ingest(1)
    assert (summary["accepted"], summary["rejected"], summary["hard_negatives"],
            summary["unsure"], summary["pending"]) == (3, 2, 1, len(rows) - 5, 0)
    assert summary["added"] == 4
    added = {(m.image_id, m.category_id, m.kind) for m in
             _rows(store, schema.Member, schema.Member.round == 1)}
    assert added == {(rows[i].image_id, rows[i].category_id, "positive")
                     for i in (selected[0], selected[1], unselected[1])} | {
                         (rows[selected[2]].image_id, rows[selected[2]].category_id,
                          "hard_negative")}
    assert store.round(1)["status"] == "closed"
    again = store.ingest(1)
    assert again["added"] == 0 and store.count("member") == 12 + 4
    with pytest.raises(ValueError, match="closed"):
        _decide(store, "bob", [tasks[selected[0]]])
    assert store.next_tasks("bob", 5) == []  # a closed round hands out nothing
    # S_1 now holds the accepted images: the exemplars of round 2 may come from them.
    s1 = {m[0] for m in store.members(1, kind="positive")}
    assert {rows[selected[0]].image_id, rows[unselected[1]].image_id} <= s1


def test_ingest_allow_pending_leaves_pending_tasks_out(project):
    store, _ = project
    task = store.next_tasks("ann", 1)[0]
    _decide(store, "ann", [task], "accept")
    summary = store.ingest(1, allow_pending=True)
    assert summary["pending"] == 29 and summary["added"] == 1


def test_selection_quality_against_a_hand_count(project):
    store, _ = project
    rows = _rows(store, schema.Task)
    tasks = store.next_tasks("ann", 100)
    # Decide by the rule: accept when the image id is even, unsure every 7th task.
    decisions = {}
    for t in tasks:
        decisions[t["task_id"]] = ("unsure" if t["task_id"] % 7 == 0 else
                                   "accept" if t["candidate_id"] % 2 == 0 else "reject")
    store.record_decisions([{"task_id": i, "labeler": "ann", "decision": d}
                            for i, d in decisions.items()])
    names = {c.id: c.name for c in store.categories()}
    quality = store.selection_quality(1)
    for name in [None, *sorted(set(names.values()))]:
        mine = [r for r in rows if name is None or names[r.category_id] == name]
        uniform = [r for r in mine if r.uniform and decisions[r.id] != "unsure"]
        precision_n = [r for r in uniform if r.selected]
        precision_k = [r for r in precision_n if decisions[r.id] == "accept"]
        recall_n = [r for r in uniform if decisions[r.id] == "accept"]
        census = [r for r in mine if r.selected and decisions[r.id] != "unsure"]
        got = quality["overall"] if name is None else quality["categories"][name]
        assert got["precision"] == stats.proportion(len(precision_k), len(precision_n))
        # No scores with probes here: every task asks its argmax (q = 1), so the ratio is
        # the old count ratio, and the report calls it an upper bound.
        a = [1.0 if r.selected else 0.0 for r in recall_n] + [0.0] * (len(uniform) -
                                                                   len(recall_n))
        b = [1.0] * len(recall_n) + [0.0] * (len(uniform) - len(recall_n))
        assert got["recall"] == stats.ratio_estimate(a, b)
        assert got["recall"]["value"] == (len(precision_k) / len(recall_n) if recall_n
                                          else None)
        assert got["recall_method"] == "argmax only (upper bound)"
        assert got["selected_acceptance"] == stats.proportion(
            sum(decisions[r.id] == "accept" for r in census), len(census))
        assert got["uniform_tasks"] == sum(r.uniform for r in mine)
    assert quality["overall"]["precision"]["n"] > 0 and quality["overall"]["recall"]["n"] > 0


def test_status_and_export(project):
    store, info = project
    tasks = store.next_tasks("ann", 4)
    _decide(store, "ann", tasks[:2], "accept")
    (bobs,) = store.next_tasks("bob", 1)
    assert bobs["task_id"] not in {t["task_id"] for t in tasks}
    _decide(store, "bob", [bobs], "reject")
    # bob's decision on a task leased to ann is not recorded: its one slot is hers.
    assert _decide(store, "bob", tasks[2:3], "reject") == 0
    # Her two undecided leases come back first, then 2 new tasks.
    again = [t["task_id"] for t in store.next_tasks("ann", 4)]
    assert set(again[:2]) == {tasks[2]["task_id"], tasks[3]["task_id"]}
    assert not set(again[2:]) & ({t["task_id"] for t in tasks} | {bobs["task_id"]})
    status = store.status()
    (round_1,) = status["rounds"]
    # leased (undecided): tasks[2], tasks[3] and the 2 new ones.
    assert (round_1["tasks"], round_1["accepted"], round_1["rejected"], round_1["pending"],
            round_1["leased"]) == (30, 2, 1, 27, 4)
    assert sum(c["tasks"] for c in round_1["categories"].values()) == 30
    assert [c["seed"] for c in status["categories"]] == [4, 4, 4]
    assert status["labelers"] == {"ann": 2, "bob": 1}
    exported = list(store.iter_decisions())
    assert [(e["task_id"], e["labeler"], e["decision"]) for e in exported] == [
        (tasks[0]["task_id"], "ann", "accept"), (tasks[1]["task_id"], "ann", "accept"),
        (bobs["task_id"], "bob", "reject")]
    first = exported[0]
    assert first["path"] == store.image_path(tasks[0]["candidate_id"])
    assert first["model_version"] == "r1-test" and first["round"] == 1
    assert first["created_at"].endswith("+00:00") and first["seconds"] == 1.0
    assert set(first) >= {"category", "score", "uniform", "gold"}


def test_task_dicts_hide_the_source_and_carry_evidence(project):
    store, info = project
    tasks = store.next_tasks("ann", 30)
    assert len(tasks) == 30
    for task in tasks:
        assert not {"uniform", "gold", "selected"} & set(task)
        assert task["image_url"] == f"/images/{task['candidate_id']}"
        assert 3 <= len(task["exemplar_urls"]) <= 6 and len(task["neighbor_urls"]) == 3
        assert task["category_definition"] == dict(
            (c.name, c.definition) for c in info["categories"])[task["category"]]
    # Exemplars are fixed per category and round, and come from that category's seed set.
    by_category = {}
    seeds = {c.name: {info["ids"][p] for p in info["paths"] if f"/seed/{c.name}/" in p}
             for c in info["categories"]}
    for task in tasks:
        urls = by_category.setdefault(task["category"], task["exemplar_urls"])
        assert urls == task["exemplar_urls"]
        assert {int(u.rsplit("/", 1)[1]) for u in urls} <= seeds[task["category"]]
    # The queue order is not the score order.
    scores = [t["score"] for t in tasks]
    assert scores != sorted(scores) and scores != sorted(scores, reverse=True)
    with store._read() as session:
        assert session.execute(text("SELECT COUNT(*) FROM task")).scalar() == 30
    with pytest.raises(ValueError, match="unknown category 'dog'"):
        store.next_tasks("ann", 1, category="dog")
    with pytest.raises(ValueError, match="n must be"):
        store.next_tasks("ann", 0)


def _blocked_on_a_lock(store, thread, waiters=1):
    """Whether `thread` is seen waiting on a PostgreSQL lock, with `waiters` sessions
    waiting in all (polls up to 15 s)."""
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'")
    with store.engine.connect() as probe:
        for _ in range(300):
            if probe.execute(waiting).scalar() >= waiters or not thread.is_alive():
                break
            time.sleep(0.05)
        return probe.execute(waiting).scalar() >= waiters and thread.is_alive()


def _hold_decisions_open(monkeypatch, thread_name):
    """(inside, go): the decision transaction of the thread named `thread_name` stops after
    its lease and vote inserts (it sets `inside`) until `go` is set."""
    from keras_fgvc.bootstrap import store_decisions

    inside, go = threading.Event(), threading.Event()
    settle = store_decisions.settle

    def held_open(votes, taken, overlap):
        if threading.current_thread().name == thread_name:
            inside.set()
            go.wait(60)
        return settle(votes, taken, overlap)

    monkeypatch.setattr(store_decisions, "settle", held_open)
    return inside, go


def _thread(results, name, call):
    """A thread named `name` that stores call()'s result, or its exception, in results[name]."""
    def run():
        try:
            results[name] = call()
        except Exception as err:  # noqa: BLE001 - checked by the tests
            results[name] = err

    return threading.Thread(target=run, name=name)


def test_postgresql_decisions_on_one_task_wait_for_each_other(postgres_db, tmp_path,
                                                              monkeypatch):
    """Ann's transaction is held open after it wrote her lease and vote; Bob's, on the same
    overlap-2 task (no leases: decisions posted by a script), must wait for Ann's row lock
    and then read her slot and vote. Reading before locking (the race the three-labeler
    test above caught only by chance) makes Bob take slot 0 too or leave `taken` at 1."""
    store, _ = make_project(postgres_db, str(tmp_path), n_pool=3, overlap=2)
    other = open_store(postgres_db)
    task_id = min(t.id for t in _rows(store, schema.Task))
    inside, go = _hold_decisions_open(monkeypatch, "ann")
    results = {}

    def decide(on, labeler):
        return on.record_decisions([{"task_id": task_id, "labeler": labeler,
                                     "decision": "accept"}])

    ann = _thread(results, "ann", lambda: decide(store, "ann"))
    ann.start()
    assert inside.wait(60)
    bob = _thread(results, "bob", lambda: decide(other, "bob"))
    bob.start()
    try:
        blocked = _blocked_on_a_lock(store, bob)
    finally:  # let Ann commit whatever happens, so no thread is left waiting
        go.set()
        ann.join(60)
        bob.join(60)
    assert blocked
    assert results == {"ann": 1, "bob": 1}
    leases = _rows(store, schema.Assignment, schema.Assignment.task_id == task_id)
    assert sorted((x.slot, x.labeler) for x in leases) == [(0, "ann"), (1, "bob")]
    (task,) = _rows(store, schema.Task, schema.Task.id == task_id)
    assert (task.taken, task.open, task.outcome) == (2, False, "accept")
    other.close()
    store.close()


def test_postgresql_ingest_waits_for_a_decision_in_flight(postgres_db, tmp_path, monkeypatch):
    """Ann's decision is held open after its writes; an ingest of the round (another
    connection) must wait for it and then count her accept into S_1. Without the round
    lock the ingest reads the outcomes before her commit, closes the round, and her
    decision lands in a closed round, in neither S_1 nor H_1. Bob's decision, sent while
    the ingest waits, queues behind it (a stream of decisions cannot hold an ingest off)
    and is refused once the round is closed."""
    store, _ = make_project(postgres_db, str(tmp_path), n_pool=3)
    other, third = open_store(postgres_db), open_store(postgres_db)
    (task,) = store.next_tasks("ann", 1)
    (bobs,) = store.next_tasks("bob", 1)
    inside, go = _hold_decisions_open(monkeypatch, "ann")
    results = {}
    ann = _thread(results, "ann", lambda: _decide(store, "ann", [task]))
    ann.start()
    assert inside.wait(60)
    ingest = _thread(results, "ingest", lambda: other.ingest(1, allow_pending=True))
    ingest.start()
    bob = _thread(results, "bob", lambda: _decide(third, "bob", [bobs]))
    try:
        blocked = _blocked_on_a_lock(store, ingest)
        bob.start()
        queued = _blocked_on_a_lock(store, bob, waiters=2)
    finally:
        go.set()
        ann.join(60)
        ingest.join(60)
        if bob.ident:
            bob.join(60)
    assert blocked and queued
    assert results["ann"] == 1
    assert results["ingest"]["accepted"] == 1 and results["ingest"]["added"] == 1
    assert isinstance(results["bob"], ValueError) and "closed" in str(results["bob"])
    positives = store.members(1, "positive")
    assert task["candidate_id"] in {row[0] for row in positives}
    for s in (third, other, store):
        s.close()


def test_postgresql_a_decision_waits_for_an_ingest_in_flight(postgres_db, tmp_path,
                                                             monkeypatch):
    """The ingest of round 1 is held open after it wrote S_1 / H_1; Ann's decision (another
    connection) must wait for it and then be refused: the round is closed. Without the
    round lock it is recorded into the round being closed and never reaches S_1."""
    store, _ = make_project(postgres_db, str(tmp_path), n_pool=3)
    other = open_store(postgres_db)
    (task,) = other.next_tasks("ann", 1)
    inside, go, results = threading.Event(), threading.Event(), {}
    insert = type(store)._insert_members  # a staticmethod

    def held_open(session, members):
        added = insert(session, members)
        if threading.current_thread().name == "ingest":
            inside.set()
            go.wait(60)
        return added

    monkeypatch.setattr(type(store), "_insert_members", staticmethod(held_open))
    ingest = _thread(results, "ingest", lambda: store.ingest(1, allow_pending=True))
    ingest.start()
    assert inside.wait(60)
    ann = _thread(results, "ann", lambda: _decide(other, "ann", [task]))
    ann.start()
    try:
        blocked = _blocked_on_a_lock(store, ann)
    finally:
        go.set()
        ingest.join(60)
        ann.join(60)
    assert blocked
    assert isinstance(results["ann"], ValueError) and "closed" in str(results["ann"])
    assert results["ingest"]["accepted"] == 0
    assert _rows(store, schema.Decision) == []
    other.close()
    store.close()


def test_postgresql_asking_for_tasks_never_waits_on_ones_own_task_being_decided(
        postgres_db, tmp_path, monkeypatch):
    """Ann's first tab holds its decision on her first task open; her second tab asks for a
    page. It must not wait on that task's lock (a wait there could close a deadlock with a
    decision batch): the page comes at once, without the task being decided."""
    store, _ = make_project(postgres_db, str(tmp_path), n_pool=6)
    other = open_store(postgres_db)
    first, second = store.next_tasks("ann", 2)
    inside, go = _hold_decisions_open(monkeypatch, "tab1")
    results = {}
    tab1 = _thread(results, "tab1", lambda: _decide(store, "ann", [first]))
    tab1.start()
    assert inside.wait(60)
    tab2 = _thread(results, "tab2", lambda: other.next_tasks("ann", 2))
    tab2.start()
    try:
        tab2.join(10)
        waited = tab2.is_alive()
    finally:
        go.set()
        tab1.join(60)
        tab2.join(60)
    assert not waited
    ids = [t["task_id"] for t in results["tab2"]]
    assert len(ids) == 2 and ids[0] == second["task_id"] and first["task_id"] not in ids
    assert results["tab1"] == 1
    other.close()
    store.close()
