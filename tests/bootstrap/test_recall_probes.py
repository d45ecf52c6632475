"""Recall probes: the probe distribution, its draws, and the selection's recall estimate
against a population whose truth is known (unbiased with probes, an upper bound without)."""

import numpy as np
import pytest

from keras_fgvc.bootstrap import selection
from keras_fgvc.bootstrap.store_reports import _quality


def probe_reference(p, share, floor=selection.PROBE_FLOOR):
    """q(argmax) = 1 - share; another category c: share ((1 - floor) p_c / sum of the
    others' p + floor / (N - 1)), written row by row."""
    q = np.zeros_like(p)
    for i, row in enumerate(p):
        top, others = int(np.argmax(row)), [c for c in range(len(row)) if c != int(np.argmax(row))]
        mass = sum(row[c] for c in others)
        for c in others:
            shape = row[c] / mass if mass > 0 else 1 / len(others)
            q[i, c] = share * ((1 - floor) * shape + floor / len(others))
        q[i, top] = 1 - share
    return q


def test_probe_distribution_matches_reference():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5) * 0.3, size=50)
    p[0] = [1.0, 0, 0, 0, 0]  # nothing left for the others: even split
    for share in (0.0, 0.3, 0.9):
        q = selection.probe_distribution(p, share)
        np.testing.assert_allclose(q, probe_reference(p, share), atol=1e-12)
        np.testing.assert_allclose(q.sum(axis=1), 1.0)
        if share:
            assert (q > 0).all()  # every category can be asked: what makes it unbiased
    np.testing.assert_array_equal(selection.probe_distribution(p[:, :1], 0.3), 1.0)
    with pytest.raises(ValueError, match=r"\[n, N\]"):
        selection.probe_distribution(np.ones(3), 0.3)


def test_draws_follow_the_distribution_and_are_fixed_by_seed_round_image():
    p = np.tile([[0.1, 0.6, 0.25, 0.05]], (40000, 1))
    column, q, score = selection.draw_probes(p, 0.3, np.random.default_rng(1).random(40000))
    expected = selection.probe_distribution(p[:1], 0.3)[0]
    np.testing.assert_allclose(np.bincount(column, minlength=4) / 40000, expected, atol=0.01)
    np.testing.assert_allclose(q, expected[column])
    np.testing.assert_allclose(score, p[0][column])
    units = selection.probe_units(7, 2, [5, 6, 7])
    np.testing.assert_array_equal(units, selection.probe_units(7, 2, [5, 6, 7]))
    assert units[0] == selection.probe_units(7, 2, [5])[0]  # per image, not per batch
    assert not np.array_equal(units, selection.probe_units(7, 3, [5, 6, 7]))
    assert ((units >= 0) & (units < 1)).all()
    # A unit just below 1 (and one at 1, past the range) never lands on a zero-chance
    # category after the last one with q > 0.
    for unit in (np.nextafter(1.0, 0.0), 1.0):
        assert selection.draw_probes(np.array([[0.0, 1.0, 0.0]]), 0.0, [unit])[0] == [1]
    # A tie is broken as the caller's argmax broke it (scoring passes tf.argmax's).
    tie = np.array([[0.5, 0.5]])
    assert selection.probe_distribution(tie, 0.3, top=[1]).tolist() == [[0.3, 0.7]]
    assert selection.draw_probes(tie, 0.0, [0.2], top=[1])[0] == [1]


def _population(rng, m=4000, categories=4):
    """Truth (-1: none of the categories) and the model's probabilities: right 70% of the
    time, and an image outside the categories gets a confident wrong answer half the time."""
    truth = rng.integers(-1, categories, m)
    p = rng.dirichlet(np.ones(categories), size=m)
    right = (truth >= 0) & (rng.random(m) < 0.7)
    p[right, truth[right]] += 2.0
    sure = (truth < 0) & (rng.random(m) < 0.5)
    p[sure, rng.integers(0, categories, sure.sum())] += 2.0
    return truth, p / p.sum(axis=1, keepdims=True)


def _estimate(rng, truth, p, selected, share, size):
    """One uniform sample of `size`: each asks its probe, answered from the truth."""
    sample = rng.choice(len(truth), size, replace=False)
    column, q, _ = selection.draw_probes(p[sample], share, rng.random(size))
    argmax = p[sample].argmax(axis=1)
    rows = [(bool(selected[i]), bool(c == a), "accept" if truth[i] == c else "reject",
             float(chance)) for i, c, a, chance in zip(sample, column, argmax, q)]
    return _quality({}, rows)["recall"]


def test_recall_estimate_is_unbiased_with_probes_and_an_upper_bound_without():
    rng = np.random.default_rng(3)
    truth, p = _population(rng)
    selected = p.max(axis=1) > 0.5
    recall = (selected & (p.argmax(axis=1) == truth)).sum() / (truth >= 0).sum()
    probed = [_estimate(rng, truth, p, selected, 0.5, 400) for _ in range(300)]
    values = np.array([e["value"] for e in probed])
    assert abs(values.mean() - recall) < 3 * values.std() / np.sqrt(len(values)) + 0.003
    covered = np.mean([e["low"] <= recall <= e["high"] for e in probed])
    assert covered > 0.9  # 95% intervals
    argmax_only = np.array([_estimate(rng, truth, p, selected, 0.0, 400)["value"]
                            for _ in range(100)])
    assert argmax_only.mean() > recall + 0.1  # misses the positives placed elsewhere


def test_store_estimates_recall_from_probes_and_ingest_keeps_probes_out_of_h(db, tmp_path):
    """The 30-task project (conftest.make_project: every 5th task asks the next category,
    not the image's own i % 3) with scores whose argmax is category i % 3: those tasks are
    probes. Decided from the truth, the report's precision and recall equal the formulas
    by hand, and a rejected probe is no hard negative while an accepted one is a positive
    of the category it asked."""
    from sqlalchemy import select

    from keras_fgvc.bootstrap import db as schema
    from keras_fgvc.bootstrap import stats
    from tests.bootstrap.conftest import make_project

    store, info = make_project(db, str(tmp_path))
    categories, tasks = info["categories"], info["tasks"]
    rows = []
    for i, task in enumerate(tasks):
        argmax = categories[i % 3].id
        q = 0.5 if task["category_id"] == argmax else 0.25
        rows.append((task["image_id"], argmax, task["score"], task["category_id"], q, 0.3))
    store.add_scores(1, 0, rows)
    names = {c.id: c.name for c in categories}
    with store.engine.begin() as connection:  # two probes find an image of their category
        for task in (tasks[0], tasks[10]):
            connection.execute(schema.Image.__table__.update()
                               .where(schema.Image.id == task["image_id"])
                               .values(truth=names[task["category_id"]]))
    truth = {i: t for i, _, t in store.images(origin="pool", subset=1)}
    with store._read() as session:
        stored = session.execute(select(schema.Task.__table__)).all()
    decided = {}
    for t in stored:
        decided[t.id] = "accept" if truth[t.image_id] == names[t.category_id] else "reject"
    store.record_decisions([{"task_id": k, "labeler": "ann", "decision": v}
                            for k, v in decided.items()])
    argmax_of = {r[0]: r[1] for r in rows}
    q_of = {r[0]: r[4] for r in rows}
    a, b, hits, asked = [], [], 0, 0
    for t in stored:
        if not t.uniform:
            continue
        y = (decided[t.id] == "accept") / q_of[t.image_id]
        asks_argmax = argmax_of[t.image_id] == t.category_id
        b.append(y)
        a.append(y if t.selected and asks_argmax else 0.0)
        if t.selected and asks_argmax:
            asked += 1
            hits += decided[t.id] == "accept"
    report = store.selection_quality(1)
    quality = report["overall"]
    assert quality["recall"] == stats.ratio_estimate(a, b)
    assert quality["precision"] == stats.proportion(hits, asked)
    # Per category: a task counts under the category it asks (a probe of bee is bee's).
    for category in categories:
        mine = [t for t in stored if t.uniform and t.category_id == category.id]
        y = [(decided[t.id] == "accept") / q_of[t.image_id] for t in mine]
        own = [v if t.selected and argmax_of[t.image_id] == t.category_id else 0.0
               for v, t in zip(y, mine)]
        assert report["categories"][category.name]["recall"] == stats.ratio_estimate(own, y)
    assert quality["recall_method"] == "probes" and 0 < quality["recall"]["value"] < 1
    outcomes = store.outcomes(1)
    probes = [t for t, _ in outcomes if not t["asks_argmax"]]
    assert probes and all(t["argmax_category"] != t["category"] for t in probes)
    summary = store.ingest(1)
    members = store.members(1, "hard_negative")
    index_of = {c.id: c.index for c in categories}
    expected = {(t.image_id, index_of[t.category_id]) for t in stored
                if decided[t.id] == "reject" and t.selected
                and argmax_of[t.image_id] == t.category_id}
    assert {(m[0], m[2]) for m in members} == expected
    assert summary["hard_negatives"] == len(expected)
    accepted_probes = {(t["image_id"], t["category_index"]) for t, o in outcomes
                       if o == "accept" and not t["asks_argmax"]}
    positives = {(m[0], m[2]) for m in store.members(1, "positive")}
    assert accepted_probes and accepted_probes <= positives
    store.close()


def test_gold_corrected_estimates_survive_labeler_errors():
    """5% of the answers flipped: each false accept on a probe counts 1 / q, so the raw
    recall falls far below the truth; corrected with the error rates measured on 200 gold
    items (flipped alike), precision and recall are centred on the truth and covered."""
    from keras_fgvc.bootstrap.stats import proportion

    rng = np.random.default_rng(5)
    truth, p = _population(rng)
    argmax, selected = p.argmax(axis=1), p.max(axis=1) > 0.5
    hit = selected & (argmax == truth)
    true = {"recall": hit.sum() / (truth >= 0).sum(), "precision": hit.sum() / selected.sum()}
    raw, corrected = {"recall": [], "precision": []}, {"recall": [], "precision": []}
    for _ in range(200):
        sample = rng.choice(len(truth), 600, replace=False)
        column, q, _ = selection.draw_probes(p[sample], 0.5, rng.random(600))
        answer = (truth[sample] == column) != (rng.random(600) < 0.05)
        rows = [(bool(selected[i]), bool(c == argmax[i]), "accept" if a else "reject",
                 float(chance)) for i, c, chance, a in zip(sample, column, q, answer)]
        errors = {"false_accept": proportion(int((rng.random(100) < 0.05).sum()), 100),
                  "false_reject": proportion(int((rng.random(100) < 0.05).sum()), 100)}
        quality = _quality({}, rows, errors)
        for key in raw:
            raw[key].append(quality[key]["value"])
            corrected[key].append(quality[f"{key}_corrected"])
    assert np.mean(raw["recall"]) < true["recall"] - 0.1
    for key, estimates in corrected.items():
        values = np.array([e["value"] for e in estimates if e["value"] is not None])
        assert len(values) >= 195
        assert abs(values.mean() - true[key]) < 3 * values.std() / np.sqrt(len(values)) + 0.01
        covered = np.mean([e["value"] is not None and e["low"] <= true[key] <= e["high"]
                           for e in estimates])  # no estimate counts as a miss
        assert covered > 0.9, (key, covered)
    assert "recall_corrected" not in _quality({}, rows)  # no gold: nothing to correct with


def test_store_corrects_with_the_gold_tasks_error_rates(db, tmp_path):
    """Gold tasks (every other one) decided with deliberate errors: `labeler_error` counts
    the false accepts and rejects of their outcomes by hand, and the report's corrected
    precision and recall are `stats`' formulas on the uniform tasks with those rates; a
    project without decided gold reports no correction."""
    from sqlalchemy import select

    from keras_fgvc.bootstrap import db as schema
    from keras_fgvc.bootstrap import stats
    from tests.bootstrap.conftest import make_project

    store, info = make_project(db, str(tmp_path), gold_every=2)
    assert store.selection_quality(1)["labeler_error"] is None
    names = {c.id: c.name for c in info["categories"]}
    truth = {i: t for i, _, t in store.images(origin="pool", subset=1)}
    with store._read() as session:
        stored = session.execute(select(schema.Task.__table__)).all()
    decided, wrong = {}, {"accept": 0, "reject": 0}
    right_of = {t.id: "accept" if truth[t.image_id] == names[t.category_id] else "reject"
                for t in stored}
    for k, t in enumerate(stored):  # every 4th task answered wrongly, every 9th unsure
        right = right_of[t.id]
        decision = ("unsure" if k % 9 == 4 else
                    {"accept": "reject", "reject": "accept"}[right] if k % 4 == 1 else right)
        decided[t.id] = decision
        if t.gold and decision != "unsure" and decision != right:
            wrong[right] += 1
    store.record_decisions([{"task_id": k, "labeler": "ann", "decision": v}
                            for k, v in decided.items()])
    gold = [t for t in stored if t.gold and decided[t.id] != "unsure"]
    negatives = sum(right_of[t.id] == "reject" for t in gold)
    errors = store.labeler_error()
    assert errors == {"false_accept": stats.proportion(wrong["reject"], negatives),
                      "false_reject": stats.proportion(wrong["accept"], len(gold) - negatives)}
    assert wrong["reject"] and wrong["accept"]  # both rates measured, neither zero
    report = store.selection_quality(1)
    assert report["labeler_error"] == errors
    uniform = [t for t in stored if t.uniform and decided[t.id] != "unsure"]
    hits = sum(t.selected and decided[t.id] == "accept" for t in uniform)
    overall = report["overall"]
    assert overall["precision_corrected"] == stats.corrected_proportion(
        hits, sum(t.selected for t in uniform), errors["false_accept"], errors["false_reject"])
    assert overall["recall_corrected"] == stats.corrected_ratio(
        [float(t.selected) for t in uniform],
        [float(decided[t.id] == "accept") for t in uniform], [1.0] * len(uniform),
        errors["false_accept"], errors["false_reject"])
    assert overall["recall_corrected"]["value"] is not None
    assert set(report["categories"]["bee"]) >= {"precision_corrected", "recall_corrected"}
    store.close()
