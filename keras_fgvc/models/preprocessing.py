"""Backbone-specific input normalisation, inside the model.

Every model in `keras_fgvc.models` takes images as float32 in [0, 255] and
normalises them itself, so that training pipelines, exported SavedModels and
TF Serving clients never need a separate normalisation step.
"""

import keras
from keras import ops

# keras.applications "caffe" mode: BGR order, ImageNet mean subtracted, no scaling.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# keras.applications "torch" mode: [0, 1], then ImageNet mean / std (RGB).
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

MODES = ("caffe", "tf", "torch", "unit", "none")


@keras.saving.register_keras_serializable(package="keras_fgvc")
class ImageNormalization(keras.layers.Layer):
    """Map [0, 255] images to the input range a backbone was trained with.

    The modes follow `keras.applications.imagenet_utils.preprocess_input`:

    - ``"caffe"`` (ResNet v1, VGG16): RGB -> BGR, subtract the ImageNet mean
      ``(103.939, 116.779, 123.68)``, no scaling.
    - ``"tf"`` (ResNet v2, InceptionV3): ``x / 127.5 - 1``, range [-1, 1].
    - ``"torch"``: ``(x / 255 - mean) / std`` with the ImageNet RGB statistics.
    - ``"unit"`` (the small CNN): ``x / 255``, range [0, 1].
    - ``"none"``: unchanged (EfficientNetV2 normalises inside its own graph).

    Args:
        mode: one of ``"caffe"``, ``"tf"``, ``"torch"``, ``"unit"``, ``"none"``.
        grayscale_to_rgb: if True, a 1-channel input is repeated to 3 channels
            first (so that ImageNet-shaped weights fit grayscale data).

    Call arguments:
        inputs: images ``[B, H, W, C]``, float values in [0, 255].

    Returns:
        Normalised images ``[B, H, W, C']`` (C' = 3 for tiled grayscale).

    Example:
        >>> layer = ImageNormalization("tf")
        >>> layer(np.full((1, 2, 2, 3), 255.0, "float32"))[0, 0, 0]  # [1, 1, 1]
    """

    def __init__(self, mode="tf", grayscale_to_rgb=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown normalisation mode {mode!r}; expected one of {MODES}.")
        self.mode = mode
        self.grayscale_to_rgb = bool(grayscale_to_rgb)

    def _channels_out(self, channels):
        if self.grayscale_to_rgb and channels == 1:
            return 3
        return channels

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self._channels_out(input_shape[-1]))

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        channels = x.shape[-1]
        if self.grayscale_to_rgb and channels == 1:
            x = ops.concatenate([x, x, x], axis=-1)
            channels = 3
        if self.mode in ("caffe", "torch") and channels != 3:
            raise ValueError(
                f"Normalisation mode {self.mode!r} needs 3-channel images, got {channels} "
                "channels; pass grayscale_to_rgb=True for grayscale inputs."
            )
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "grayscale_to_rgb": self.grayscale_to_rgb})
        return config
