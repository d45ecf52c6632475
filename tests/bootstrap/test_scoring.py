"""Scoring C_i: the evaluation preprocessing, category columns, shards, the tasks chosen."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.bootstrap import scoring, selection
from keras_fgvc.bootstrap.selection import choose_tasks, nearest_labelled
from keras_fgvc.bootstrap.store import Category
from keras_fgvc.data import image_ops
from keras_fgvc.data.preprocessing import make_spec, prepare_image
from tests.bootstrap.loop_data import image, write_png


def _model(num_classes=5, size=28):
    """A tiny softmax model with a named 'classifier' layer (the features for neighbours)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1), name="images")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, {"logits": logits, "probabilities": probabilities})


def _prepared(path, spec):
    """The evaluation preprocessing of one file (what scoring feeds the model)."""
    return prepare_image(image_ops.decode_image(tf.io.read_file(path), 1), spec)


def _files(tmp_path, n=11, broken=(3,), size=(40, 32)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = str(tmp_path / f"c{i:02d}.png")
        if i in broken:
            with open(path, "wb") as f:
                f.write(b"not a png")
        else:
            pixels = np.resize(image(rng, i % 3), size)
            write_png(path, pixels.astype(np.uint8))
        paths.append(path)
    return paths


def test_predictions_use_the_evaluation_preprocessing_and_skip_unreadable_files(tmp_path):
    paths = _files(tmp_path)
    model = _model()
    spec = make_spec(28, 1, crop_fraction=0.875, aspect="center_square")
    keys = list(range(100, 100 + len(paths)))
    got_keys, got = [], []
    for k, p in scoring.predict_files(lambda x: model(x, training=False)["probabilities"],
                                      paths, keys, spec, batch_size=4):
        got_keys += k.tolist()
        got.append(p)
    readable = [i for i in range(len(paths)) if i != 3]
    assert got_keys == [keys[i] for i in readable]  # order kept, the broken file dropped
    images = np.stack([prepare_image(image_ops.decode_image(tf.io.read_file(paths[i]), 1), spec)
                       for i in readable])
    np.testing.assert_allclose(np.concatenate(got), model.predict(images, verbose=0)
                               ["probabilities"], rtol=1e-5, atol=1e-6)


def test_mirrored_strategy_gives_the_same_predictions(tmp_path):
    from keras_fgvc.training.strategy import make_strategy

    paths = _files(tmp_path, n=9)
    spec = make_spec(28, 1)
    results = []
    for name in ("one_device", "mirrored"):  # tests run with 2 logical CPU devices
        strategy = make_strategy(name)
        with strategy.scope():
            model = _model()
        call = lambda x, model=model: model(x, training=False)["probabilities"]
        batches = list(scoring.predict_files(call, paths, list(range(9)), spec, strategy,
                                             batch_size=5))  # 2 batches, the last one odd
        results.append((np.concatenate([k for k, _ in batches]),
                        np.concatenate([p for _, p in batches])))
    assert results[0][0].tolist() == results[1][0].tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


def test_confidence_is_the_category_column_not_renormalised():
    # HNS layout with background: [background, a, b, hard_negative]; categories a, b
    labels = ["background", "a", "b", "hard_negative"]
    categories = [Category(7, 0, "a", ""), Category(9, 1, "b", "")]
    columns = scoring.category_columns(labels, categories)
    assert columns == [1, 2]
    probs = np.array([[0.1, 0.3, 0.2, 0.4], [0.05, 0.05, 0.8, 0.1]], np.float32)
    fake = lambda x, training=False: {"probabilities": tf.constant(probs)}
    top, index = scoring.confidence_call(fake, columns)(None)
    np.testing.assert_allclose(top, [0.3, 0.8])
    assert index.numpy().tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"lack the categories \['c'\]"):
        scoring.category_columns(labels, categories + [Category(3, 2, "c", "")])


class _FakeStore:
    def __init__(self, done=(), settings=None):
        self.done, self.written = set(done), {}
        self._settings = settings or {"seed": 0, "probe_share": 0.5}

    def settings(self):
        return dict(self._settings)

    def scored_shards(self, round_index):
        return set(self.done)

    def add_scores(self, round_index, shard, rows):
        assert shard not in self.done and shard not in self.written
        self.written[shard] = list(rows)


def test_only_unscored_shards_are_scored_and_unreadable_shards_are_marked(tmp_path):
    paths = _files(tmp_path, n=11, broken=(3, 8, 9))
    rows = [(i + 1, p) for i, p in enumerate(paths)]
    model = _model(num_classes=2)
    call = scoring.confidence_call(model, [0, 1])
    spec = make_spec(28, 1)
    categories = [Category(5, 0, "a", ""), Category(6, 1, "b", "")]
    full = _FakeStore()
    summary = scoring.score_subset(full, 1, rows, call, spec, categories, shard_size=2,
                                   batch_size=3, verbose=0)
    assert sorted(full.written) == [0, 1, 2, 3, 4, 5] and full.written[4] == []  # 9, 10 broken
    assert summary == {"shards": 6, "scored_now": 8, "unreadable": 3, "skipped_shards": 0}
    assert [r[0] for s in sorted(full.written) for r in full.written[s]] == [
        1, 2, 3, 5, 6, 7, 8, 11]
    resumed = _FakeStore(done={0, 2, 3})
    summary = scoring.score_subset(resumed, 1, rows, call, spec, categories, shard_size=2,
                                   batch_size=4, verbose=0)
    assert sorted(resumed.written) == [1, 4, 5] and summary["skipped_shards"] == 3
    for shard, scored in resumed.written.items():
        assert [r[0] for r in scored] == [r[0] for r in full.written[shard]]
        np.testing.assert_allclose([r[2] for r in scored], [r[2] for r in full.written[shard]],
                                   rtol=1e-6)
        assert {r[1] for r in scored} <= {5, 6}  # category ids, not indices


def test_embedding_is_the_model_output_or_the_classifier_features(tmp_path):
    model = _model()
    images = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype(np.float32)
    features = keras.Model(model.inputs, model.get_layer("hidden").output)(images)
    want = features / np.linalg.norm(features, axis=-1, keepdims=True)
    np.testing.assert_allclose(scoring.embedding_call(model)(images), want, rtol=1e-5)
    inputs = keras.Input((4,))
    bare = keras.Model(inputs, {"probabilities": keras.layers.Softmax()(inputs)})
    with pytest.raises(ValueError, match="no 'embedding' output"):
        scoring.embedding_call(bare)


# === Which candidates become tasks ===

def test_selection_above_threshold_uniform_sample_and_gold():
    n = 1000
    ids = np.arange(1, n + 1)
    scores = np.linspace(0.0, 1.0, n)
    scores[10] = 0.5  # exactly the threshold: not selected (> 0.5)
    categories = ids % 3 + 10
    names = {10: "ant", 11: "bee", 12: "cat"}
    # Known labels: every 7th image; a third of them are what the model says.
    truth = {int(i): names[int(i) % 3 + 10] if i % 3 == 0 else "none" for i in ids[::7]}
    tasks = choose_tasks(ids, categories, scores, truth, threshold=0.5, uniform_share=0.1,
                         gold_share=0.05, seed=3, round_index=2, category_names=names)
    by_id = {t["image_id"]: t for t in tasks}
    selected = {int(i) for i in ids[scores > 0.5]}
    assert {i for i, t in by_id.items() if t["selected"]} == selected and 11 not in by_id
    uniform = [t for t in tasks if t["uniform"]]
    assert len(uniform) == 100  # round(0.1 * 1000)
    assert 25 < sum(not t["selected"] for t in uniform) < 75  # above and below the threshold
    gold = [t for t in tasks if t["gold"]]
    chosen = len(selected | {t["image_id"] for t in uniform})
    assert len(gold) == round(0.05 * chosen) == 27
    assert all(t["image_id"] in truth for t in gold)
    # Half the gold answers are accept: rejecting everything scores 50%, not ~100%.
    answers = [truth[t["image_id"]] == names[t["category_id"]] for t in gold]
    assert sum(answers) == 14  # ceil(27 / 2)
    assert {t["selected"] for t in gold} == {True, False}  # from above and below the threshold
    assert all(t["category_id"] == t["image_id"] % 3 + 10 for t in tasks)
    again = choose_tasks(ids, categories, scores, truth, 0.5, 0.1, 0.05, seed=3, round_index=2,
                         category_names=names)
    assert again == tasks
    # Few known accept answers: all of them, the rest reject.
    scarce = {i: t for i, t in truth.items() if t == "none" or i < 40}
    few = choose_tasks(ids, categories, scores, scarce, 0.5, 0.1, 0.05, seed=3, round_index=2,
                       category_names=names)
    few_gold = [t for t in few if t["gold"]]
    accept = sum(scarce[t["image_id"]] == names[t["category_id"]] for t in few_gold)
    assert len(few_gold) == 27 and accept == sum(
        t == names[i % 3 + 10] for i, t in scarce.items())
    with pytest.raises(ValueError, match="needs category_names"):
        choose_tasks(ids, categories, scores, truth, 0.5, 0.1, 0.05)
    other = choose_tasks(ids, categories, scores, truth, 0.5, 0.1, 0.05, seed=3, round_index=3,
                         category_names=names)
    assert {t["image_id"] for t in other if t["uniform"]} != {t["image_id"] for t in uniform}


def test_uniform_tasks_ask_their_probe_and_the_others_their_argmax():
    n = 600
    ids = np.arange(1, n + 1)
    scores = np.linspace(0.0, 1.0, n)
    categories = ids % 3 + 10
    names = {10: "ant", 11: "bee", 12: "cat"}
    probe_ids = [int((i + 1) % 3 + 10) if i % 2 else int(i % 3 + 10) for i in ids]
    probe_scores = [0.01 * (i % 50) for i in ids]
    plain = choose_tasks(ids, categories, scores, {}, 0.5, 0.1, seed=3, round_index=2)
    probed = choose_tasks(ids, categories, scores, {}, 0.5, 0.1, seed=3, round_index=2,
                          probes=(probe_ids, probe_scores))
    assert [t["image_id"] for t in probed] == [t["image_id"] for t in plain]  # same draws
    for task in probed:
        i = task["image_id"]
        if task["uniform"]:  # the probe's question and the model's confidence in it
            assert (task["category_id"], task["score"]) == (probe_ids[i - 1],
                                                            probe_scores[i - 1])
        else:
            assert (task["category_id"], task["score"]) == (i % 3 + 10, scores[i - 1])
    moved = [t for t in probed if t["uniform"] and t["category_id"] != t["image_id"] % 3 + 10]
    assert moved and any(t["selected"] for t in moved)  # some selected ones are probes
    # No probe recorded (None: a round scored without them): the argmax is asked.
    none = choose_tasks(ids, categories, scores, {}, 0.5, 0.1, seed=3, round_index=2,
                        probes=([None] * n, [None] * n))
    assert none == plain
    # Probes drawn at share 0 (each the argmax, its score the top score): the same tasks.
    same = choose_tasks(ids, categories, scores, {}, 0.5, 0.1, seed=3, round_index=2,
                        probes=(categories.tolist(), scores.tolist()))
    assert same == plain
    # Gold answers are judged against the category a task asks.
    truth = {int(i): names[probe_ids[i - 1]] for i in ids[::5]}
    gold = [t for t in choose_tasks(ids, categories, scores, truth, 0.5, 0.1, 0.2, seed=3,
                                    round_index=2, category_names=names,
                                    probes=(probe_ids, probe_scores)) if t["gold"]]
    answers = [truth[t["image_id"]] == names[t["category_id"]] for t in gold]
    assert gold and sum(answers) == (len(gold) + 1) // 2


def test_scoring_with_probabilities_draws_a_probe_per_candidate_fixed_across_resume(tmp_path):
    paths = _files(tmp_path, n=9, broken=())
    rows = [(i + 1, p) for i, p in enumerate(paths)]
    model = _model(num_classes=3)
    call = scoring.confidence_call(model, [0, 1, 2], with_probabilities=True)
    spec = make_spec(28, 1)
    categories = [Category(5, 0, "a", ""), Category(6, 1, "b", ""), Category(7, 2, "c", "")]
    full = _FakeStore(settings={"seed": 4, "probe_share": 0.5})
    scoring.score_subset(full, 1, rows, call, spec, categories, shard_size=2, batch_size=3,
                         verbose=0)
    written = [r for s in sorted(full.written) for r in full.written[s]]
    assert all(len(r) == 6 for r in written)
    probabilities = model.predict(np.stack([_prepared(p, spec) for p in paths]), verbose=0)[
        "probabilities"]
    units = selection.probe_units(4, 1, [r[0] for r in written])
    column, q, p = selection.draw_probes(probabilities, 0.5, units)
    assert [r[3] for r in written] == [[5, 6, 7][c] for c in column]
    np.testing.assert_allclose([r[4] for r in written], q, rtol=1e-6)
    np.testing.assert_allclose([r[5] for r in written], p, rtol=1e-5)
    resumed = _FakeStore(done={1}, settings={"seed": 4, "probe_share": 0.5})
    scoring.score_subset(resumed, 1, rows, call, spec, categories, shard_size=2, batch_size=4,
                         verbose=0)
    again = {r[0]: r[3:5] for s in resumed.written for r in resumed.written[s]}
    assert all(again[r[0]][0] == r[3] for r in written if r[0] in again) and len(again) == 7
    # A project made before the probes (no probe_share setting) always asks the argmax.
    old = _FakeStore(settings={"seed": 4})
    scoring.score_subset(old, 1, rows, call, spec, categories, shard_size=9, verbose=0)
    assert all(r[3] == r[1] and r[4] == 1.0 for r in old.written[0])


def test_neighbours_are_the_nearest_labelled_images_of_the_category():
    labelled = {1: ([11, 12, 13, 14], np.array([[0.0, 0], [1, 0], [2, 0], [3, 0]])),
                2: ([21], np.array([[0.0, 0]]))}
    tasks = {100: (1, np.array([2.9, 0])), 101: (2, np.array([5.0, 5])),
             102: (3, np.array([0.0, 0]))}
    assert nearest_labelled(tasks, labelled) == {100: [14, 13, 12], 101: [21], 102: []}
