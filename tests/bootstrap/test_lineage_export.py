"""A model's lineage travels into the exported SavedModel (issue 17: "the export and the
served model's metadata carry it"); a model without one exports as before."""

import json
import os

import pytest
import tensorflow as tf

from keras_fgvc.export import saved_model
from keras_fgvc.models import create_model

SIZE = 16
LINEAGE = {"round": 2, "model_version": "r2-abc", "training_set": {"positives": 12,
                                                                  "hard_negatives": 3},
           "decisions_before": 40}


@pytest.fixture(scope="module")
def model():
    return create_model("small_cnn", num_classes=3, input_shape=(SIZE, SIZE, 3))


def test_lineage_is_an_asset_and_a_metadata_output(model, tmp_path):
    path = saved_model.export_model(model, str(tmp_path), "det", ["a", "b"], lineage=LINEAGE,
                                    warmup_batch_sizes=(), update_model_config=False)
    with open(os.path.join(path, "assets", "lineage.json")) as f:
        assert json.load(f) == LINEAGE
    out = tf.saved_model.load(path).signatures["metadata"]()
    assert json.loads(out["lineage"].numpy().decode()) == LINEAGE
    assert [n.decode() for n in out["class_names"].numpy()] == ["a", "b"]


def test_without_lineage_the_metadata_is_unchanged(model, tmp_path):
    path = saved_model.export_model(model, str(tmp_path), "det", ["a", "b"],
                                    warmup_batch_sizes=(), update_model_config=False)
    assert not os.path.exists(os.path.join(path, "assets", "lineage.json"))
    out = tf.saved_model.load(path).signatures["metadata"]()
    assert sorted(out) == ["class_names", "thresholds"]


def test_a_lineage_that_is_not_json_publishes_nothing(model, tmp_path):
    with pytest.raises(ValueError, match="lineage must be JSON-serialisable"):
        saved_model.export_model(model, str(tmp_path), "det", ["a", "b"],
                                 lineage={"when": object()}, warmup_batch_sizes=())
    assert not os.path.exists(os.path.join(tmp_path, "det")) or \
        os.listdir(os.path.join(tmp_path, "det")) == []
