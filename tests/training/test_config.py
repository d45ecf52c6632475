"""Config registry, typed `--set` overrides and the errors before training."""

import dataclasses
import json
import os

import numpy as np
import pytest

from keras_fgvc.training import config as config_lib
from keras_fgvc.training.config import Config, apply_overrides, validate_config
from keras_fgvc.training.experiments import get_config, list_configs, resolve_config

PAPER_CONFIGS = [
    "inat_bg_n5089_ft", "inat_bg_n1100_ft", "inat_bg_n100_ft", "inat_bg_n10_ft", "inat_bg_n1_ft",
    "places_bg_n10_ft", "places_bg_n1_ft", "inat2017_cb_focal", "cub_kernel_pooling_resnet50",
    "inat2017_inception_v3_299", "inat2017_inception_v3_448", "inat2017_inception_v3_560",
]
FASHION_CONFIGS = [
    "fashion_bg_ft", "fashion_bg_focal", "fashion_bg_ldam_drw", "fashion_bg_lws", "fashion_bg_cb",
    "fashion_bg_downsample1", "fashion_bg_split", "fashion_bg_split_fixed",
    "fashion_lt10_softmax", "fashion_lt50_sigmoid", "fashion_lt100_focal", "fashion_lt200_cb",
    "fashion_pool_gap", "fashion_pool_cbp", "fashion_pool_kp",
    "fashion_metric_softmax", "fashion_metric_triplet_anchors",
]


def test_every_experiment_is_registered_with_its_command():
    # One test, not parametrized: the shared per-test Keras reset costs ~1 s.
    assert set(PAPER_CONFIGS + FASHION_CONFIGS) <= set(list_configs())
    for name in list_configs():
        config = get_config(name)
        assert config.name == name
        assert f"python train/fit.py --config {name}" in config.description
        validate_config(config)


def test_paper_weight_decay_is_the_papers_gradient():
    """The papers' weight decay lam is a gradient of lam * w (Ch. 3.4: "a weight decay of
    0.0005 for VGG and 0.0001 for ResNet", Caffe; the class-balanced TF code:
    lam * tf.nn.l2_loss(w) = lam / 2 ||w||^2). The built model's L2 term must have that
    gradient: d/dw (weight_decay * ||w||^2) = lam * w, i.e. weight_decay = lam / 2."""
    import keras
    import tensorflow as tf

    paper = {"cub_kernel_pooling_resnet50": 1e-4, "cub_kernel_pooling_vgg16": 5e-4,
             "cub_compact_bilinear_vgg16": 5e-4, "inat2017_cb_focal": 1e-4,
             "inat2017_softmax": 1e-4, "inat_bg_n100_ft": 1e-4}
    for name, lam in paper.items():
        decay = get_config(name).weight_decay
        kernel = tf.Variable(tf.ones((3, 4)) * 0.5)
        with tf.GradientTape() as tape:
            penalty = keras.regularizers.L2(decay)(kernel)  # what the model builders add
        np.testing.assert_allclose(tape.gradient(penalty, kernel).numpy(), lam * 0.5,
                                   rtol=1e-6, err_msg=name)


def test_paper_values():
    assert get_config("inat_bg_n100_ft").batch_size == 1024
    assert get_config("places_bg_n1_ft").batch_size == 1024
    cb = get_config("inat2017_cb_focal")
    assert (cb.loss, cb.loss_kwargs["beta"], cb.loss_kwargs["gamma"]) == ("cb_focal", 0.999, 0.5)
    kp = get_config("cub_kernel_pooling_resnet50")
    assert kp.image_size == 448 and kp.clip_value == 1.0
    assert kp.model_kwargs["pooling_kwargs"] == {"order": 4, "dims": 4096}
    for size in (299, 448, 560):
        large = get_config(f"inat2017_inception_v3_{size}")
        assert large.image_size == size and large.optimizer == "rmsprop"
        assert (large.schedule, large.decay_rate, large.decay_every_epochs) == (
            "exponential", 0.94, 2.0)
        assert large.finetune_epochs > 0 and large.finetune_learning_rate == 1e-6
    assert {f"fashion_lt{i}_{k}" for i in (10, 50, 100, 200)
            for k in ("softmax", "sigmoid", "focal", "cb")} <= set(list_configs())


def test_overrides_are_parsed_with_the_field_type():
    config = apply_overrides(get_config("fashion_bg_ft"), [
        "steps_per_epoch=3", "learning_rate=1e-3", "augment=true", "decay_epochs=10,20",
        "finetune_trainable=lws,scale", "data_dir=/tmp/x", "model_kwargs.pooling=kernel",
        "model_kwargs.pooling_kwargs={\"order\": 3}", "task_kwargs.background_fraction=0.9",
    ])
    assert config.steps_per_epoch == 3 and isinstance(config.steps_per_epoch, int)
    assert config.learning_rate == pytest.approx(1e-3)
    assert config.augment is True
    assert config.decay_epochs == (10, 20)
    assert config.finetune_trainable == ("lws", "scale")
    assert config.data_dir == "/tmp/x"
    assert config.model_kwargs == {"pooling": "kernel", "pooling_kwargs": {"order": 3}}
    assert config.task_kwargs["background_fraction"] == 0.9
    # The registered config itself is unchanged (frozen, copied).
    assert get_config("fashion_bg_ft").steps_per_epoch == 0
    assert apply_overrides(config, ["augment=0"]).augment is False


def test_json_round_trip():
    config = get_config("inat2017_inception_v3_448")
    again = Config.from_dict(json.loads(config.to_json()))
    assert again == config


def test_bad_overrides():
    cases = [
        (["nonsense=1"], "Unknown config key 'nonsense'"),
        (["steps_per_epoch=many"], "steps_per_epoch='many'"),
        (["augment=maybe"], "augment='maybe'"),
        (["epochs"], "not of the form key=value"),
        (["learning_rate.x=1"], "is not a dict"),
        (["model_kwargs=[1]"], "model_kwargs"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            apply_overrides(get_config("fashion_bg_ft"), bad)


def test_unknown_config_lists_the_registered_ones():
    with pytest.raises(ValueError, match="Unknown config 'nope'.*fashion_bg_ft"):
        get_config("nope")


def test_validation_errors():
    cases = [
        ("loss_kwargs.beta=1.0", r"beta=1.0 is outside \[0, 1\)"),
        ("loss_kwargs.beta=-0.1", r"beta=-0.1 is outside \[0, 1\)"),
        ("drw_beta=1.5", "drw_beta=1.5 is outside"),
        ("optimizer=adam", "optimizer='adam' is not one of"),
        ("batch_size=0", "batch_size=0 must be > 0"),
        ("label_smoothing=1", "label_smoothing"),
        ("decay_epochs=5,2", "must be increasing"),
    ]
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            resolve_config("fashion_lt100_cb", [override])


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        config_lib.register_config(get_config("fashion_bg_ft"))


def test_config_changes_lists_differing_keys():
    from keras_fgvc.training.config import config_changes
    from keras_fgvc.training.workdir import RESUME_SAFE_FIELDS

    base = get_config("fashion_bg_ft")
    old = json.loads(base.to_json())
    assert config_changes(old, base) == []
    new = apply_overrides(base, ["learning_rate=0.5", "eval_batch_size=7",
                                 "task_kwargs.background_keep=0.1"])
    assert config_changes(old, new) == ["eval_batch_size", "learning_rate", "task_kwargs"]
    assert config_changes(old, new, ignore=RESUME_SAFE_FIELDS) == ["learning_rate",
                                                                    "task_kwargs"]
    del old["seed"]  # a key missing on one side counts as changed
    assert config_changes(old, base) == ["seed"]


def test_resume_safe_fields_are_config_fields_and_documented():
    from keras_fgvc.training.workdir import RESUME_SAFE_FIELDS

    fields = {f.name for f in dataclasses.fields(Config)}
    assert RESUME_SAFE_FIELDS <= fields
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    paragraph = readme[readme.index("is refused with the keys"):][:400]
    assert sorted(RESUME_SAFE_FIELDS) == sorted(
        name for name in fields if f"`{name}`" in paragraph)


def test_config_defaults_match_the_losses_defaults():
    # Config cannot import the losses (train/fit.py --help loads no TensorFlow): the one
    # default it repeats must equal the losses' home of it.
    from keras_fgvc.losses.class_balanced import BETA
    from keras_fgvc.training.config import Config

    assert Config().drw_beta == BETA


@pytest.mark.parametrize("key", ["weights", "base_weights"])
@pytest.mark.parametrize("init_trunk", ["teacher", "/tmp/other.keras"])
def test_init_trunk_refuses_to_overwrite_loaded_trunk_weights(key, init_trunk):
    config = Config(name="x", model_kwargs={key: "/tmp/mine.weights.h5"}, init_trunk=init_trunk)
    with pytest.raises(ValueError, match=f"would overwrite the trunk weights loaded from "
                                         f"model_kwargs.{key}="):
        validate_config(config)
    validate_config(dataclasses.replace(config, init_trunk=""))  # keeping them is fine
    validate_config(dataclasses.replace(config, model_kwargs={key: None}))
