"""`PriorProbability` (`keras_fgvc.models.initializers`): values, config, older files."""

import doctest
import json
import zipfile

import keras
import numpy as np
import pytest

from keras_fgvc.models import PriorProbability, initializers
from tests.test_case import run_serialization_test

# Where the class lived when older `.keras` files were written.
OLD_MODULE = "keras_fgvc.losses.class_balanced"


def test_prior_probability_initializer():
    init = PriorProbability(0.01)
    np.testing.assert_allclose(init((2, 3)), np.full((2, 3), -np.log(99.0)), rtol=1e-6)
    np.testing.assert_allclose(PriorProbability()((5,)), np.full(5, -np.log(4.0)), rtol=1e-6)
    assert PriorProbability()((4,), dtype="float64").dtype == "float64"
    revived = run_serialization_test(init)
    assert revived.probability == 0.01
    for bad in [0.0, 1.0, -0.5, 2.0]:
        with pytest.raises(ValueError, match="probability"):
            PriorProbability(bad)
    with pytest.raises(ValueError, match="C >= 2"):
        PriorProbability()((1,))


def test_registered_name_is_unchanged():
    config = keras.saving.serialize_keras_object(PriorProbability(0.25))
    assert config["registered_name"] == "keras_fgvc>PriorProbability"
    assert config["module"] == "keras_fgvc.models.initializers"


def test_config_written_before_the_move_loads():
    # Keras looks a registered object up by `registered_name` before it reads `module`, so
    # the old module path in an existing file does not matter.
    old = {"module": OLD_MODULE, "class_name": "PriorProbability",
           "config": {"probability": 0.25}, "registered_name": "keras_fgvc>PriorProbability"}
    revived = keras.saving.deserialize_keras_object(old)
    assert type(revived) is PriorProbability and revived.probability == 0.25
    np.testing.assert_allclose(revived((3,)), np.full(3, -np.log(3.0)), rtol=1e-6)


def test_keras_file_saved_before_the_move_loads(tmp_path):
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(3, bias_initializer=PriorProbability(0.1))])
    path = tmp_path / "new.keras"
    model.save(path)
    # Rewrite the file's config as the old class location wrote it.
    old_path = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert text.count('"keras_fgvc.models.initializers"') == 1
                data = text.replace('"keras_fgvc.models.initializers"',
                                    json.dumps(OLD_MODULE)).encode()
            dst.writestr(item, data)
    loaded = keras.saving.load_model(old_path)
    init = loaded.layers[-1].bias_initializer
    assert type(init) is PriorProbability and init.probability == 0.1
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(initializers, initializers.__name__) if t.examples]
    assert tests, "keras_fgvc.models.initializers has no docstring examples"
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
