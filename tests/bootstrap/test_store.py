"""The Store on SQLite and on a real PostgreSQL server: schema, project, images, members,
rounds, scores (each test runs on both backends; the queue is in test_store_queue.py)."""


import pytest
from sqlalchemy import update

from keras_fgvc.bootstrap import db as schema
from keras_fgvc.bootstrap.store import open_store


def test_schema_version_recorded_and_other_versions_refused(db):
    store = open_store(db, create=True)
    with store._read() as session:
        assert session.get(schema.Meta, "schema_version").value == str(schema.SCHEMA_VERSION)
    for version, word in ((schema.SCHEMA_VERSION + 1, "newer"), (0, "older")):
        with store.engine.begin() as conn:
            conn.execute(update(schema.Meta.__table__).where(schema.Meta.key == "schema_version")
                         .values(value=str(version)))
        with pytest.raises(schema.SchemaVersionError, match=word) as error:
            open_store(db)
        assert f"schema version {version}" in str(error.value)
        assert str(schema.SCHEMA_VERSION) in str(error.value)
    store.close()


def test_open_refuses_what_is_not_a_project(tmp_path):
    with pytest.raises(FileNotFoundError, match="init"):
        open_store(str(tmp_path / "missing.db"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_store(str(tmp_path / "no" / "dir.db"), create=True)
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_store("mysql://x/y")
    with pytest.raises(ValueError, match="in-memory"):
        open_store("sqlite://", create=True)


def test_open_refuses_an_empty_postgres_database(postgres_db):
    with pytest.raises(schema.SchemaVersionError, match="no meta table"):
        open_store(postgres_db)


def test_init_project_once_with_checked_settings(db):
    store = open_store(db, create=True)
    with pytest.raises(ValueError, match="not initialised"):
        store.settings()
    for bad, message in (({"overlap": 0}, "overlap"), ({"threshold": 1.5}, "threshold"),
                         ({"lease_seconds": "x"}, "lease_seconds"), ({"rounds": 0}, "rounds")):
        with pytest.raises(ValueError, match=message):
            store.init_project(bad)
    store.init_project({"rounds": 3, "overlap": 2})
    assert store.settings()["overlap"] == 2 and store.settings()["threshold"] == 0.5
    with pytest.raises(ValueError, match="already initialised"):
        store.init_project({"rounds": 3})
    store.close()
    reopened = open_store(db)
    assert reopened.settings()["rounds"] == 3
    reopened.close()


def test_categories_images_members(db, tmp_path):
    store = open_store(db, create=True)
    store.init_project({})
    cats = store.add_categories([("zebra", "striped"), ("ant", None), ("moth", "night")])
    assert [(c.index, c.name, c.definition) for c in cats] == [
        (0, "ant", ""), (1, "moth", "night"), (2, "zebra", "striped")]
    assert store.add_categories([("ant", ""), ("moth", ""), ("zebra", "")]) == cats
    with pytest.raises(ValueError, match="already has categories"):
        store.add_categories([("ant", "")])
    root = str(tmp_path)
    rows = [{"path": f"{root}/s{i}.png", "origin": "seed", "subset": None, "truth": "ant"}
            for i in range(3)] + [{"path": f"{root}/p{i}.png", "origin": "pool", "subset": 2,
                                   "truth": None} for i in range(4)]
    store.add_images(rows)
    store.add_images(rows)  # a rerun adds nothing
    assert store.count("image") == 7
    for bad, message in (
            ([{"path": "rel.png", "origin": "pool"}], "absolute"),
            ([{"path": f"{root}/n.png", "origin": "web"}], "origin"),
            ([{"path": f"{root}/s0.png", "origin": "pool", "subset": 2}], "already stored"),
            ([{"path": f"{root}/n.png", "origin": "pool"}] * 2, "twice")):
        with pytest.raises(ValueError, match=message):
            store.add_images([{"path": f"{root}/new.png", "origin": "pool"}] + bad)
    assert store.count("image") == 7  # nothing of a refused batch was written
    ids = store.image_ids([r["path"] for r in rows] + ["/not/there.png"])
    assert len(ids) == 7 and store.image_path(ids[f"{root}/p1.png"]) == f"{root}/p1.png"
    assert [r[1] for r in store.images(origin="pool", subset=2)] == [
        f"{root}/p{i}.png" for i in range(4)]
    with pytest.raises(KeyError, match="no image with id 999"):
        store.image_path(999)
    ant, moth = cats[0], cats[1]
    members = [(ids[f"{root}/s0.png"], ant.id, "positive", 0),
               (ids[f"{root}/s1.png"], None, "background", 0),
               (ids[f"{root}/p0.png"], moth.id, "hard_negative", 1),
               (ids[f"{root}/p1.png"], moth.id, "positive", 2)]
    assert store.add_members(members) == 4
    assert store.add_members(members + members) == 0
    assert store.members(1) == [(ids[f"{root}/s0.png"], f"{root}/s0.png", 0, "positive", 0),
                                (ids[f"{root}/s1.png"], f"{root}/s1.png", None, "background", 0),
                                (ids[f"{root}/p0.png"], f"{root}/p0.png", 1, "hard_negative", 1)]
    assert [m[0] for m in store.members(2, kind="positive")] == [ids[f"{root}/s0.png"],
                                                                 ids[f"{root}/p1.png"]]
    for bad, message in (((1, None, "positive", 0), "needs a"), ((1, ant.id, "background", 0),
                                                                  "has no"),
                         ((1, 99, "positive", 0), "unknown category_id"),
                         ((12345, ant.id, "positive", 0), "unknown image ids"),
                         ((1, ant.id, "neg", 0), "kind")):
        with pytest.raises(ValueError, match=message):
            store.add_members([(ids[f"{root}/s2.png"], ant.id, "positive", 0), bad])
    assert store.count("member") == 4
    store.close()


def test_rounds_and_scores_by_shard(db, tmp_path):
    store = open_store(db, create=True)
    store.init_project({})
    (cat,) = store.add_categories([("cat", "")])
    store.add_images([{"path": f"{tmp_path}/{i}.png", "origin": "pool"} for i in range(6)])
    ids = sorted(store.image_ids([f"{tmp_path}/{i}.png" for i in range(6)]).values())
    first = store.start_round(1, model_version="r1-aa", workdir="/w")
    assert first["status"] == "training" and store.start_round(1) == first
    assert store.update_round(1, status="scoring", lineage={"s": [1, 2]})["lineage"] == {
        "s": [1, 2]}
    with pytest.raises(ValueError, match="round status"):
        store.update_round(1, status="done")
    with pytest.raises(ValueError, match="unknown round fields"):
        store.update_round(1, colour="red")
    with pytest.raises(ValueError, match="no round 2"):
        store.update_round(2, status="closed")
    assert store.add_scores(1, 0, [(ids[0], cat.id, 0.9), (ids[1], cat.id, 0.1)]) == 2
    assert store.add_scores(1, 0, [(ids[0], cat.id, 0.5)]) == 0  # shard done: kept as is
    with pytest.raises(ValueError, match="finite"):
        store.add_scores(1, 1, [(ids[2], cat.id, 0.3), (ids[3], cat.id, float("nan"))])
    with pytest.raises(ValueError, match="unknown image ids"):
        store.add_scores(1, 1, [(ids[2], cat.id, 0.3), (4242, cat.id, 0.5)])
    assert store.scored_shards(1) == {0}  # the refused shards wrote nothing
    assert store.add_scores(1, 1, [(ids[3], cat.id, 0.25), (ids[2], cat.id, 0.75)]) == 2
    assert store.scores(1) == ([ids[0], ids[1], ids[2], ids[3]], [cat.id] * 4,
                               [0.9, 0.1, 0.75, 0.25])
    assert [r["index"] for r in store.rounds()] == [1] and store.round(3) is None
    store.close()


def test_a_version_1_database_is_migrated_in_place(db):
    """Schema 1 had no probe columns on `score`: opening it adds them (NULL for the rounds
    scored before), records version 2, and keeps every row."""
    from sqlalchemy import MetaData, Table, inspect, select

    v1 = MetaData()
    for table in schema.Base.metadata.sorted_tables:
        if table.name != "score":
            table.to_metadata(v1)
    score = schema.Base.metadata.tables["score"]
    Table("score", v1, *[c._copy() for c in score.columns if not c.name.startswith("probe_")])
    engine = schema.make_engine(db, create=True)
    v1.create_all(engine)
    with engine.begin() as connection:
        connection.execute(schema.Meta.__table__.insert(), [
            {"key": "schema_version", "value": "1"}])
        connection.execute(v1.tables["category"].insert(), [
            {"id": 1, "index": 0, "name": "a", "definition": ""}])
        connection.execute(v1.tables["image"].insert(), [
            {"id": 1, "path": "/x.png", "origin": "pool", "subset": 1, "truth": None}])
        connection.execute(v1.tables["score"].insert(), [
            {"round": 1, "image_id": 1, "category_id": 1, "score": 0.75, "shard": 0}])
    engine.dispose()
    store = open_store(db)
    columns = {c["name"] for c in inspect(store.engine).get_columns("score")}
    assert {"probe_category_id", "probe_q", "probe_score"} <= columns
    with store._read() as session:
        assert session.get(schema.Meta, "schema_version").value == str(schema.SCHEMA_VERSION)
        assert session.execute(select(schema.Score.score, schema.Score.probe_q)).all() == [
            (0.75, None)]
    store.close()
    open_store(db).close()  # opening again: already version 2, nothing to do
