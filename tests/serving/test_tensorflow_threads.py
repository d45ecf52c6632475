"""tensorflow_model_server's thread flags: which pool sizes they mean, and when they can apply."""

import pytest
import tensorflow as tf

from keras_fgvc.serving import server


def _threads(session=0, intra=0, inter=0):
    return server.ServerOptions(tensorflow_session_parallelism=session,
                                tensorflow_intra_op_parallelism=intra,
                                tensorflow_inter_op_parallelism=inter).tensorflow_threads()


def test_session_parallelism_sizes_both_pools_unless_one_is_given():
    assert _threads() == (0, 0)  # TensorFlow's defaults
    assert _threads(session=3) == (3, 3)
    assert _threads(intra=2) == (2, 0)
    assert _threads(inter=5) == (0, 5)
    assert _threads(session=3, intra=2) == (2, 0)  # as TF Serving: the pair wins
    assert _threads(intra=2, inter=1) == (2, 1)


def test_all_three_is_refused_and_negatives_follow_tf_serving():
    with pytest.raises(ValueError, match="You cannot configure all"):
        _threads(session=4, intra=2, inter=1)
    # TF Serving only asks "> 0": a lone negative falls back to session parallelism, and
    # beside a positive one it is passed on (TensorFlow's meaning: run in the caller).
    assert _threads(inter=-1) == (0, 0)
    assert _threads(session=3, inter=-1) == (3, 3)
    assert _threads(intra=2, inter=-1) == (2, -1)
    assert _threads(session=-2) == (-2, -2)


def test_a_pool_tensorflow_already_started_is_refused_not_ignored():
    tf.constant(1.0) + 1.0  # TensorFlow has started in this (test) process
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    server.set_tensorflow_threads(0, 0)  # nothing asked: nothing to do
    server.set_tensorflow_threads(intra, 0)  # already that size: fine
    with pytest.raises(ValueError, match="Start the server in a process of its own"):
        server.set_tensorflow_threads(intra + 1, 0)
    with pytest.raises(ValueError, match="--tensorflow_intra_op_parallelism"):
        server.ModelServer(server.ServerOptions(model_base_path="/nonexistent",
                                                tensorflow_intra_op_parallelism=intra + 1))
