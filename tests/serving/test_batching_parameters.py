"""--batching_parameters_file: TF Serving BatchingParameters text proto, wired into the server."""

import threading

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.serving import errors, server
from keras_fgvc.serving.batching_parameters import (
    BatchingParameters,
    parse_batching_parameters,
    read_batching_parameters,
)

GOOD = """
# A TF Serving batching config, as passed to tensorflow_model_server.
max_batch_size { value: 32 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 4 }
max_enqueued_batches { value: 100 }
allowed_batch_sizes: 8
allowed_batch_sizes: 32
pad_variable_length_inputs: false
"""


def test_parses_tf_serving_file(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(GOOD)
    params = read_batching_parameters(str(path))
    assert params == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=4,
        max_enqueued_batches=100, allowed_batch_sizes=(8, 32), pad_variable_length_inputs=False)
    # Other text-format spellings protobuf accepts; unset fields keep the defaults given.
    defaults = BatchingParameters(max_batch_size=16, batch_timeout_micros=500)
    params = parse_batching_parameters(
        "max_batch_size: < value: 8 >, allowed_batch_sizes: [2, 8]", defaults)
    assert params == BatchingParameters(max_batch_size=8, batch_timeout_micros=500,
                                        allowed_batch_sizes=(2, 8))
    assert parse_batching_parameters("", defaults) == defaults


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 }\nenable_large_batch_splitting: true",
     'no field named "enable_large_batch_splitting"'),
    ("max_batch_sise { value: 8 }", 'no field named "max_batch_sise"'),
    ("max_batch_size: 8", 'Expected "{"'),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4", r"final entry .* \(4\) must equal"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 2",
     "strictly increasing"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1, got 0"),
])
def test_bad_text_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_batching_parameters(text)


def test_missing_or_bad_file_stops_server_at_start_up(tmp_path):
    missing = str(tmp_path / "nope.config")
    options = server.ServerOptions(model_base_path=str(tmp_path), enable_batching=True,
                                   batching_parameters_file=missing)
    with pytest.raises(ValueError, match="Cannot read --batching_parameters_file .*nope.config"):
        server.ModelServer(options)
    bad = tmp_path / "bad.config"
    bad.write_text("max_batch_size { value: 8 }\nbatch_threads { value: 2 }\n")
    options.batching_parameters_file = str(bad)
    with pytest.raises(ValueError, match=r"bad.config.*2:1 .*no field named \"batch_threads\""):
        server.ModelServer(options)
    options.enable_batching = False  # still checked, then ignored (as TF Serving ignores it)
    with pytest.raises(ValueError, match="batch_threads"):
        server.ModelServer(options)


def test_file_overrides_flags(tmp_path):
    path = tmp_path / "b.config"
    path.write_text("batch_timeout_micros { value: 7 }")
    options = server.ServerOptions(enable_batching=True, max_batch_size=16,
                                   batch_timeout_micros=500, batching_parameters_file=str(path))
    assert options.batching_parameters() == BatchingParameters(16, 7)
    options.batching_parameters_file = ""
    assert options.batching_parameters() == BatchingParameters(16, 500)
    options.enable_batching = False
    assert options.batching_parameters() is None


class _Doubler(tf.Module):
    """y = 2x + 1 row by row; `seen` reports the batch size the model actually ran."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def serve(self, x):
        n = tf.shape(x)[0]
        return {"y": 2.0 * x + 1.0, "seen": tf.fill([n], n)}


def test_requests_padded_to_allowed_batch_sizes_give_unpadded_outputs(tmp_path):
    base = tmp_path / "m"
    module = _Doubler()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    config = tmp_path / "batching.config"
    config.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 }\n"
                      "num_batch_threads { value: 2 } max_enqueued_batches { value: 4 }\n"
                      "allowed_batch_sizes: 4 allowed_batch_sizes: 8\n")
    options = server.ServerOptions(port=0, model_name="m", model_base_path=str(base),
                                   file_system_poll_wait_seconds=60, enable_batching=True,
                                   batching_parameters_file=str(config))
    model_server = server.ModelServer(options).start()
    try:
        servable = model_server.manager.get("m")
        rng = np.random.default_rng(0)
        requests = [rng.normal(size=(rows, 3)).astype(np.float32) for rows in (1, 3, 5, 2, 8)]
        results = [None] * len(requests)

        def work(i):
            results[i] = servable.predict("", {"x": requests[i]})[1]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for x, out in zip(requests, results):
            np.testing.assert_allclose(out["y"], 2.0 * x + 1.0, rtol=1e-6)
            assert len(out["seen"]) == len(x)
            assert set(out["seen"]) <= {4, 8}  # every batch ran at an allowed size
        # Unpadded reference: the signature called directly.
        direct = servable.run_unbatched("serving_default", {"x": requests[1]})
        np.testing.assert_array_equal(results[1]["y"], direct["y"])
        assert list(direct["seen"]) == [3, 3, 3]
        # The file's max_batch_size caps requests, as in TF Serving.
        with pytest.raises(errors.ServingError, match="larger than the maximum batch size 8"):
            servable.predict("", {"x": np.zeros((9, 3), np.float32)})
    finally:
        model_server.stop(grace_seconds=0)
