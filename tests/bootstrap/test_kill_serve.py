"""kill -9 of the page server while a labeler posts: nothing lost, nothing counted twice."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.store import open_store
from tests.bootstrap.conftest import make_project

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 4


def start_server(db):
    code = ("import sys; from keras_fgvc.bootstrap.web import serve; "
            "serve(sys.argv[1], port=0)")
    process = subprocess.Popen([sys.executable, "-c", code, db], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    line = process.stdout.readline()
    if "http://" not in line:
        process.kill()
        raise RuntimeError(f"the server did not start: {line}{process.stderr.read()}")
    return process, line.split("http://", 1)[1].split("/", 1)[0]


def call(address, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{address}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def label_until_killed(address, acked, in_flight, stop):
    """next -> decisions in a loop; a batch is acked only on a 200 with the right count."""
    step = 0
    while not stop.is_set():
        try:
            tasks = call(address, f"/api/next?labeler=kim&n={BATCH}")[1]["tasks"]
            if not tasks:
                return
            step += 1
            batch = [{"task_id": t["task_id"], "labeler": "kim", "seconds": 0.1,
                      "decision": ("accept", "reject", "unsure")[(t["task_id"] + step) % 3]}
                     for t in tasks]
            in_flight.append(batch)
            status, body = call(address, "/api/decisions", {"decisions": batch})
            if status == 200 and body == {"recorded": len(batch), "skipped": []}:
                acked.append(in_flight.pop())
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return  # the server was killed (before, during or after the write)


def check_consistent(store, overlap=1):
    """Every derived column agrees with the rows it is derived from."""
    d, a, t = schema.Decision, schema.Assignment, schema.Task
    with store._read() as session:
        decided = {(r.task_id, r.labeler): r.decision for r in session.execute(
            select(d.task_id, d.labeler, d.decision))}
        leases = session.execute(select(a.task_id, a.labeler, a.decided)).all()
        tasks = session.scalars(select(t)).all()
        duplicates = session.execute(select(d.task_id, d.labeler, func.count())
                                     .group_by(d.task_id, d.labeler)
                                     .having(func.count() > 1)).all()
    assert not duplicates
    lease_of = {(r.task_id, r.labeler): r.decided for r in leases}
    assert all(lease_of.get(key) is True for key in decided), "a decision without its lease"
    assert all(decided_flag == (key in decided) for key, decided_flag in lease_of.items())
    for task in tasks:
        votes = [v for (task_id, _), v in decided.items() if task_id == task.id]
        assert task.taken == sum(key[0] == task.id for key in lease_of), task.id
        assert task.open == (task.taken < overlap), task.id
        assert task.outcome == (votes[0] if len(votes) >= overlap else None), task.id
    return decided


@pytest.mark.slow
def test_kill_9_of_serve_mid_decision_loses_nothing(db, tmp_path):
    store, info = make_project(db, str(tmp_path), n_pool=300)
    store.close()
    acked, written = [], []
    for cycle in range(3):
        process, address = start_server(db)
        stop, in_flight = threading.Event(), []
        before = len(acked)
        client = threading.Thread(target=label_until_killed,
                                  args=(address, acked, in_flight, stop))
        client.start()
        deadline = time.monotonic() + 60
        # Kill once some batches are acked and while a POST is in flight.
        while (len(acked) < before + 8 + 3 * cycle or not in_flight) \
                and time.monotonic() < deadline and client.is_alive():
            time.sleep(0.0005)
        time.sleep((0.0, 0.002, 0.006)[cycle])  # land before, during or after the write
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        stop.set()
        client.join(60)
        assert len(acked) > before, process.stderr.read()
        process.stderr.close()
        process.stdout.close()
        store = open_store(db)
        decided = check_consistent(store)
        if db.endswith(".db"):
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        store.close()
        for batch in acked:  # every decision that got a 200 is there, as it was sent
            for item in batch:
                assert decided[(item["task_id"], "kim")] == item["decision"]
        for batch in in_flight:  # a batch cut off by the kill is there whole or not at all
            present = [(item["task_id"], "kim") in decided for item in batch]
            assert all(present) or not any(present), present
            if all(present):
                written.append(batch)
            print(f"kill {cycle}: a batch in flight was {'written' if all(present) else 'lost'}"
                  f" ({len(acked)} batches acked so far)")
        assert len(decided) == sum(len(b) for b in acked + written)  # nothing counted twice
    # After a restart the same labeler finishes the round: nothing is lost or doubled.
    process, address = start_server(db)
    try:
        label_until_killed(address, acked, [], threading.Event())
        status, body = call(address, "/api/status")
        assert body["rounds"][0]["pending"] == 0 and body["labelers"] == {"kim": 300}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        process.stdout.close()
        process.stderr.close()
    store = open_store(db)
    assert len(check_consistent(store)) == 300
    store.close()
