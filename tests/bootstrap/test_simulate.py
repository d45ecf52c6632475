"""The simulated labeler, through a real server over HTTP."""

import pytest
from sqlalchemy import select, update

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap import simulate as sim
from tests.bootstrap.conftest import make_project, running_server


def _decisions(store):
    d, t, i, c = schema.Decision, schema.Task, schema.Image, schema.Category
    with store._read() as session:
        return session.execute(select(d.task_id, d.labeler, d.decision, i.truth, c.name)
                               .join(t, t.id == d.task_id).join(i, i.id == t.image_id)
                               .join(c, c.id == t.category_id)).all()


@pytest.mark.parametrize("error_rate", [0.0, 0.3, 1.0])
def test_simulated_labels_follow_the_truth_with_the_error_rate(db, tmp_path, error_rate):
    store, info = make_project(db, str(tmp_path), n_pool=30)
    with running_server(db, auth_token="token-1234") as url:
        result = sim.simulate(db, url, error_rate, "sim", seed=3, batch=7,
                              auth_token="token-1234")
    rows = _decisions(store)
    assert result["decisions"] == len(rows) == 30
    assert result["accepted"] + result["rejected"] == 30
    assert result["accepted"] == sum(r.decision == "accept" for r in rows)
    wrong = [r for r in rows if (r.decision == "accept") != (r.truth == r.name)]
    expected = [r for r in rows if sim.simulated_decision(r.truth, r.name, error_rate, 3, "sim",
                                                          r.task_id)[1]]
    assert sorted(r.task_id for r in wrong) == sorted(r.task_id for r in expected)
    assert result["flipped"] == len(wrong)
    assert len(wrong) == {0.0: 0, 1.0: 30}.get(error_rate, len(wrong))
    if error_rate == 0.3:
        assert 0 < len(wrong) < 30
    if error_rate in (0.0, 1.0):  # the project mixes right and wrong categories
        assert {r.decision for r in rows} == {"accept", "reject"}
    store.close()


def test_max_tasks_and_two_simulated_labelers_with_overlap(tmp_path):
    db = str(tmp_path / "p.db")
    store, _ = make_project(db, str(tmp_path), n_pool=20, overlap=2)
    with running_server(db) as url:
        first = sim.simulate(db, url + "/", 0.0, "a", max_tasks=5, batch=3)
        assert first["decisions"] == 5 and first["requests"] == 4
        rest = sim.simulate(db, url, 0.0, "a")
        other = sim.simulate(db, url, 0.0, "b")
    assert rest["decisions"] == 15 and other["decisions"] == 20
    assert {o for _, o in store.outcomes(1)} <= {"accept", "reject"}
    assert store.agreement()["pairs"][0]["observed_agreement"] == 1.0
    store.close()


def test_simulate_errors(tmp_path):
    db = str(tmp_path / "p.db")
    store, _ = make_project(db, str(tmp_path), n_pool=4)
    for kwargs, message in (({"error_rate": 1.5}, "error_rate"), ({"labeler": " "}, "labeler"),
                            ({"url": "ftp://x"}, "http"), ({"batch": 0}, "batch")):
        args = dict({"db": db, "url": "http://127.0.0.1:1", "error_rate": 0.0,
                     "labeler": "a"}, **kwargs)
        with pytest.raises(ValueError, match=message):
            sim.simulate(**args)
    with running_server(db, auth_token="token-1234") as url:
        with pytest.raises(RuntimeError, match="401"):
            sim.simulate(db, url, 0.0, "a")
    with store.engine.begin() as conn:
        conn.execute(update(schema.Image.__table__).values(truth=None))
    with running_server(db) as url, pytest.raises(ValueError, match="--truth|init --truth"):
        sim.simulate(db, url, 0.0, "a")
    store.close()
