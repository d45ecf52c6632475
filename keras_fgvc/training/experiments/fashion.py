"""Small experiments on Fashion-MNIST that train here in minutes (CPU).

Each config's description holds the command that runs it. Families:

- Fashion-BG (rare Dress / Shirt / Bag in a sea of background, teacher
  labels for background splitting): fine-tuning, focal, LDAM-DRW, LWS,
  class-balanced, background downsampling (keep 1 / 5 / 25 %), background
  splitting, background splitting + fixed background logit. As in the paper
  and the authors' code, every method fine-tunes the pretrained network whose
  predictions split the background (the teacher; `init_trunk="teacher"`):
  its trunk, fresh heads. ``fashion_bg_<method>_scratch`` trains the same
  method from a random start (the teacher gives only the pseudo-labels).
- Long-tailed Fashion-MNIST (imbalance 10, 50, 100, 200; CB-loss Sec. 5.4.1)
  with softmax / sigmoid / focal / class-balanced focal loss.
- Pooling on Fashion-MNIST: global average vs compact bilinear vs kernel
  pooling (Ch. 3; gradient clipping to [-1, 1]).
- Metric learning: softmax vs triplet + anchors (Ch. 2; anchors initialised
  by k-means and learned, triplets re-mined every M steps, Sec. 2.4.1).
"""

import dataclasses

from keras_fgvc.training.config import Config, register_config

# These runs are short (hundreds of steps), so the BatchNorm moving averages (momentum 0.99,
# started at mean 0 / variance 1) have not converged when they end: the statistics are
# re-estimated from 100 training batches at the end of every stage (`training.batchnorm`).
BN_REESTIMATE_BATCHES = 100


def _command(name):
    return f"python train/fit.py --config {name} --strategy one_device --workdir /tmp/{name}"


def _register(base, name, summary, **changes):
    config = dataclasses.replace(base, name=name, **changes)
    description = f"{summary}\nRun: {_command(name)}"
    return register_config(dataclasses.replace(config, description=description))


_FASHION_BG_METHODS = []  # (config, summary) of each Fashion-BG method, for its _scratch twin


def _register_bg(name, summary, **changes):
    _FASHION_BG_METHODS.append((_register(FASHION_BG, name, summary, **changes), summary))


# === Fashion-BG ===

FASHION_BG = Config(
    task="fashion_bg",
    task_kwargs={"background_fraction": 0.98},
    model="small_cnn",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    warmup_epochs=0.5,
    decay_epochs=(4,),
    batch_size=256,
    epochs=5,
    checkpoint_every_steps=100,
    bn_reestimate_batches=BN_REESTIMATE_BATCHES,
    init_trunk="teacher",  # the paper's protocol: fine-tune the teacher's trunk
)

_register_bg("fashion_bg_ft", "Fashion-BG, standard fine-tuning (FT), softmax over N+1.")
_register_bg("fashion_bg_focal",
             "Fashion-BG, sigmoid focal loss (gamma 2; appendix C baseline), prior bias init.",
             model="small_cnn_sigmoid", loss="focal", loss_kwargs={"gamma": 2.0})
_register_bg("fashion_bg_ldam_drw",
             "Fashion-BG, LDAM loss with deferred re-weighting (class-balanced from epoch 4) on "
             "a normalised linear head (cosine logits, Cao et al. 2019).",
             model_kwargs={"head": "cosine", "head_kwargs": {"scale": 30.0}},
             loss="ldam", loss_kwargs={"max_margin": 0.5, "scale": 30.0}, drw_epoch=3,
             drw_beta=0.9999)
_register_bg("fashion_bg_lws",
             "Fashion-BG, LWS: train, then learn only per-class logit scales with "
             "class-balanced sampling (second stage).",
             finetune_epochs=1, finetune_transform="lws", finetune_sampling="class_balanced",
             finetune_learning_rate=0.01)
_register_bg("fashion_bg_cb",
             "Fashion-BG, class-balanced softmax cross-entropy (beta 0.9999, Eq. 5.8).",
             loss="cb_softmax", loss_kwargs={"beta": 0.9999})
for _keep in (1, 5, 25):
    _register_bg(f"fashion_bg_downsample{_keep}",
                 f"Fashion-BG, background downsampled to {_keep}% (appendix F), FT.",
                 task_kwargs={"background_fraction": 0.98, "background_keep": _keep / 100})
_register_bg("fashion_bg_split",
             "Fashion-BG, background splitting: N+1 head + auxiliary head mimicking the "
             "teacher (weight 0.1).",
             model="bg_split", loss="bg_split", aux_loss_weight=0.1)
_register_bg("fashion_bg_split_fixed",
             "Fashion-BG, background splitting with the fixed background logit (appendix B).",
             model="bg_split_fixed_background", loss="bg_split", aux_loss_weight=0.1)
# From-scratch variants of every Fashion-BG method (another experiment than the paper's).
for _config, _summary in _FASHION_BG_METHODS:
    _register(_config, f"{_config.name}_scratch",
              f"{_summary} From a random start, the teacher giving only its pseudo-labels "
              "(not the paper's protocol).", init_trunk="")

# === Long-tailed Fashion-MNIST ===

FASHION_LT = Config(
    task="fashion_lt",
    model="small_cnn",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=2e-4,
    schedule="warmup_step",
    warmup_epochs=1,
    decay_epochs=(4, 5),
    decay_rate=0.01,  # Sec. 5.4: decay by 0.01, not 0.1, on long-tailed data
    batch_size=128,
    epochs=6,
    bn_reestimate_batches=BN_REESTIMATE_BATCHES,
)

_LT_LOSSES = {
    "softmax": ("softmax cross-entropy", dict(model="small_cnn", loss="softmax")),
    "sigmoid": ("sigmoid cross-entropy, prior bias init",
                dict(model="small_cnn_sigmoid", loss="sigmoid")),
    "focal": ("sigmoid focal loss (gamma 1)",
              dict(model="small_cnn_sigmoid", loss="focal", loss_kwargs={"gamma": 1.0})),
    "cb": ("class-balanced focal loss (beta 0.9999, gamma 0.5)",
           dict(model="small_cnn_sigmoid", loss="cb_focal",
                loss_kwargs={"beta": 0.9999, "gamma": 0.5})),
}
for _imbalance in (10, 50, 100, 200):
    for _key, (_what, _changes) in _LT_LOSSES.items():
        _register(FASHION_LT, f"fashion_lt{_imbalance}_{_key}",
                  f"Long-tailed Fashion-MNIST, imbalance {_imbalance}, {_what}.",
                  task_kwargs={"imbalance": _imbalance}, **_changes)

# === Pooling: GAP vs compact bilinear vs kernel pooling ===

FASHION_POOL = Config(
    task="fashion_mnist",
    model="classifier",
    model_kwargs={"backbone": "small_cnn", "pooling": "gap"},
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    clip_value=1.0,  # Ch. 3: gradients clipped to [-1, 1]
    schedule="warmup_step",
    decay_epochs=(2,),
    batch_size=128,
    epochs=3,
    bn_reestimate_batches=BN_REESTIMATE_BATCHES,
)

_register(FASHION_POOL, "fashion_pool_gap", "Fashion-MNIST, global average pooling.")
# Sec. 3.3.1: "For a fair comparison, we set the feature dimension in CBP to be the same as
# our kernel pooling method": 1 + c + 3 * 4096 = 12,417 for the small CNN's c = 128 channels.
_register(FASHION_POOL, "fashion_pool_cbp",
          "Fashion-MNIST, compact bilinear pooling (Tensor Sketch) at kernel pooling's "
          "dimension, d = 1 + 128 + 3 x 4096 = 12417 (Sec. 3.3.1).",
          model_kwargs={"backbone": "small_cnn", "pooling": "compact_bilinear",
                        "pooling_kwargs": {"dims": 12417}})
_register(FASHION_POOL, "fashion_pool_kp",
          "Fashion-MNIST, kernel pooling (p = 4, d = 4096, RBF-initialised coefficients).",
          model_kwargs={"backbone": "small_cnn", "pooling": "kernel",
                        "pooling_kwargs": {"order": 4, "dims": 4096}},
          adapt_examples=256)

# === Metric learning: softmax vs triplet + anchors ===

FASHION_METRIC = Config(
    task="fashion_mnist",
    model="small_cnn",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    decay_epochs=(2,),
    batch_size=120,
    epochs=3,
    bn_reestimate_batches=BN_REESTIMATE_BATCHES,
)

_register(FASHION_METRIC, "fashion_metric_softmax", "Fashion-MNIST, softmax baseline (Ch. 2).")
_register(FASHION_METRIC, "fashion_metric_triplet_anchors",
          "Fashion-MNIST, triplet loss (m 0.2, 60% local positives) + anchor soft vote "
          "(64-d, K 3, gamma 5, omega 0.1); anchors initialised by k-means, then learned; "
          "triplets re-mined every 100 steps (Sec. 2.3.5, 2.4.1).",
          model="anchor_metric",
          model_kwargs={"embedding_dim": 64, "anchors_per_class": 3, "gamma": 5.0},
          loss="triplet_anchor",
          loss_kwargs={"margin": 0.2, "positive_fraction": 0.6, "omega": 0.1},
          refresh_every_steps=100, refresh_max_examples=2048)
