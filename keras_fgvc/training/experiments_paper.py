"""Paper-scale experiments: they read local data (``--set data_dir=...``) and fail clearly without.

- Background splitting (Mullapudi et al. 2021, appendix A and E): iNat-BG with
  N = 5089, 1100, 100, 10, 1 and Places-BG with N = 10, 1; fine-tuning a
  ResNet-50 with batch size 1024 ("all other experiments in this paper are
  performed with a batch size of 1024"). ``task_kwargs.model_index`` picks
  one of the 10 (N = 10 / 1) or 5 (Places N = 10) models of a setting.
- Class-balanced loss on iNaturalist 2017 (Ch. 5.4): ResNet-50, batch 1024,
  5 warm-up epochs then step decay (Goyal et al.), class-balanced focal loss
  with beta = 0.999, gamma = 0.5 and 4x the softmax learning rate; plus the
  softmax baseline.
- Kernel pooling on CUB-200-2011 (Ch. 3.4): 448 x 448 inputs, p = 4,
  d = 4096, learning rate 0.01 (ResNet) / 0.001 (VGG) divided by 10 every 30
  epochs, momentum 0.9, weight decay 1e-4 / 5e-4, gradients clipped to
  [-1, 1]; compact bilinear pooling (d = 8192) as the baseline.
- Large-scale iNat 2017 (Ch. 4.4): Inception-v3 at 299 / 448 / 560, RMSProp
  (momentum 0.9, epsilon 1.0), batch 32, learning rate 0.045 with
  exponential decay 0.94 every 2 epochs, label smoothing 0.1; then stage 2:
  fine-tuning on a more balanced subset with learning rate 1e-6 (Ch. 4.2.2).

Pretrained ImageNet weights are not downloaded: pass a local file with
``--set model_kwargs.weights=/path/to/weights.h5``.
"""

import dataclasses

from keras_fgvc.training.config import Config, register_config


def _register(base, name, summary, **changes):
    config = dataclasses.replace(base, name=name, **changes)
    command = (f"python train/fit.py --config {name} --strategy multi_worker "
               f"--workdir /tmp/{name} --set data_dir=/data/{config.task}")
    return register_config(dataclasses.replace(
        config, description=f"{summary}\nRun: {command}"
    ))


# === Background splitting: iNat-BG and Places-BG ===

BACKGROUND = Config(
    image_size=224,
    channels=3,
    augment=True,
    model="resnet50_gap",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.4,  # 0.1 per 256 images (Goyal et al.) at batch 1024
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    warmup_epochs=1,
    decay_epochs=(20, 27),
    batch_size=1024,
    epochs=30,
    eval_batch_size=512,
    checkpoint_every_steps=1000,
)

for _n in (5089, 1100, 100, 10, 1):
    _register(BACKGROUND, f"inat_bg_n{_n}_ft",
              f"iNat-BG, N = {_n}: fine-tuning, softmax over N + 1, batch 1024.",
              task="inat_bg", task_kwargs={"n": _n, "model_index": 0})
for _n in (10, 1):
    _register(BACKGROUND, f"places_bg_n{_n}_ft",
              f"Places-BG, N = {_n}: fine-tuning, softmax over N + 1, batch 1024.",
              task="places_bg", task_kwargs={"n": _n, "model_index": 0})

# === Class-balanced loss on iNaturalist 2017 ===

CB_INAT = Config(
    task="inat2017",
    image_size=224,
    channels=3,
    augment=True,
    model="resnet50_gap",
    optimizer="sgd",
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    warmup_epochs=5,
    decay_epochs=(30, 60, 80),
    decay_rate=0.1,
    batch_size=1024,
    epochs=90,
    eval_batch_size=512,
    checkpoint_every_steps=1000,
)

_register(CB_INAT, "inat2017_cb_focal",
          "iNat 2017, ResNet-50, class-balanced focal loss (beta 0.999, gamma 0.5, Ch. 5.4).",
          loss="cb_focal", loss_kwargs={"beta": 0.999, "gamma": 0.5},
          model="classifier",
          model_kwargs={"backbone": "resnet50", "pooling": "gap", "head": "sigmoid"},
          learning_rate=1.6)  # 4x the softmax rate for focal loss on iNaturalist
_register(CB_INAT, "inat2017_softmax",
          "iNat 2017, ResNet-50, softmax cross-entropy baseline (Ch. 5.4).",
          loss="softmax", learning_rate=0.4)

# === Kernel pooling on CUB-200-2011 ===

KERNEL_CUB = Config(
    task="cub",
    image_size=448,
    channels=3,
    augment=True,
    model="resnet50_kernel_pooling",
    model_kwargs={"pooling_kwargs": {"order": 4, "dims": 4096}},
    adapt_examples=32,
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    clip_value=1.0,
    schedule="warmup_step",
    decay_epochs=(30,),
    batch_size=32,
    epochs=50,
    eval_batch_size=64,
    checkpoint_every_steps=500,
)

_register(KERNEL_CUB, "cub_kernel_pooling_resnet50",
          "CUB-200-2011 at 448, ResNet-50 + kernel pooling (p 4, d 4096), Ch. 3.")
_register(KERNEL_CUB, "cub_kernel_pooling_vgg16",
          "CUB-200-2011 at 448, VGG-16 + kernel pooling (p 4, d 4096), Ch. 3.",
          model="vgg16_kernel_pooling", learning_rate=0.001, weight_decay=5e-4)
_register(KERNEL_CUB, "cub_compact_bilinear_vgg16",
          "CUB-200-2011 at 448, VGG-16 + compact bilinear pooling (d 8192) baseline, Ch. 3.",
          model="vgg16_compact_bilinear", model_kwargs={"pooling_kwargs": {"dims": 8192}},
          adapt_examples=0, learning_rate=0.001, weight_decay=5e-4)

# === Large-scale iNat 2017 with two-stage fine-tuning ===

LARGE_INAT = Config(
    task="inat2017",
    channels=3,
    augment=True,
    model="inception_v3",
    loss="softmax",
    label_smoothing=0.1,
    optimizer="rmsprop",
    momentum=0.9,
    rmsprop_rho=0.9,
    rmsprop_epsilon=1.0,
    learning_rate=0.045,
    schedule="exponential",
    decay_rate=0.94,
    decay_every_epochs=2,
    batch_size=32,
    epochs=40,
    eval_batch_size=64,
    checkpoint_every_steps=2000,
    finetune_epochs=2,
    finetune_learning_rate=1e-6,
    finetune_max_per_class=30,
)

for _size in (299, 448, 560):
    _register(LARGE_INAT, f"inat2017_inception_v3_{_size}",
              f"iNat 2017, Inception-v3 at {_size}, RMSProp, 0.94 every 2 epochs, label "
              "smoothing; then fine-tuning on a balanced subset at 1e-6 (Ch. 4).",
              image_size=_size)
