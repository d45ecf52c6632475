"""The evaluation preprocessing as a spec: one function prepares images for evaluation and serving.

A *preprocessing spec* is a JSON-safe dict saying how a decoded image becomes a
model input. The trainer writes the spec its evaluation used to
``W/preprocessing.json`` (`keras_fgvc.training.inputs.eval_preprocessing`);
the exporter copies it into the SavedModel's assets, and the exported
``serving_default`` applies it with `prepare_image`, the function the
evaluation pipeline calls: a served image is prepared exactly as the images
on which the thresholds were chosen.

Keys:

- ``image_size``: ``[H, W]``, the model input size.
- ``channels``: 1 or 3. Files are decoded to this many channels
  (`image_ops.decode_image`: a grey file is copied into R, G and B; a colour
  file is made grey by the decoder's luma conversion); in-memory images are
  converted with `image_ops.ensure_channels`.
- ``aspect``: ``"center_square"``: the centred square of side
  ``floor(crop_fraction * min(h, w))`` (at least 1 pixel; the aspect ratio is
  kept, a wide image loses its sides); ``"stretch"``: the centred
  ``floor(crop_fraction * h) x floor(crop_fraction * w)`` window (the whole
  image at 1.0), aspect ratio not kept.
- ``crop_fraction``: in (0, 1]. The trainer uses 0.875 for configs with
  ``augment=True`` (Inception evaluation) and 1.0 otherwise.
- ``resize_method``, ``antialias``: the `tf.image.resize` method (half-pixel
  centres) and antialias flag the window is resized to ``image_size`` with.

The output is float32 in [0, 255]; every keras_fgvc model normalises inside.
A ``preprocessing.json`` written before these keys existed (only
``image_size`` and ``channels``) is read with `LEGACY_DEFAULTS`, what
serving did then: the whole image resized bilinearly, no crop.
"""

import numbers

import tensorflow as tf

from keras_fgvc.data.image_ops import center_crop, decode_image, ensure_channels, resize

ASPECTS = ("center_square", "stretch")
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian",
                  "mitchellcubic")
SPEC_KEYS = ("image_size", "channels", "aspect", "crop_fraction", "resize_method", "antialias")
LEGACY_DEFAULTS = {"aspect": "stretch", "crop_fraction": 1.0, "resize_method": "bilinear",
                   "antialias": False}


def make_spec(image_size, channels, *, crop_fraction=1.0, aspect="center_square",
              resize_method="bilinear", antialias=False):
    """A validated preprocessing spec (module docstring), JSON-safe.

    Args:
        image_size: int or ``(H, W)``.
        channels: 1 or 3.
        crop_fraction: in (0, 1].
        aspect: one of `ASPECTS`.
        resize_method: one of `RESIZE_METHODS`.
        antialias: bool.

    Raises:
        ValueError: naming the bad value.

    Example:
        >>> make_spec(224, 3, crop_fraction=0.875)["image_size"]
        [224, 224]
    """
    size = ([image_size, image_size] if isinstance(image_size, numbers.Integral)
            else list(image_size) if isinstance(image_size, (list, tuple)) else [])
    if len(size) != 2 or not all(isinstance(v, numbers.Integral) and v >= 1 for v in size):
        raise ValueError(f"image_size must be a positive int or [H, W], got {image_size!r}.")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}.")
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}.")
    if not isinstance(antialias, bool):
        raise ValueError(f"antialias must be true or false, got {antialias!r}.")
    return {"image_size": [int(v) for v in size], "channels": int(channels), "aspect": aspect,
            "crop_fraction": float(crop_fraction), "resize_method": resize_method,
            "antialias": antialias}


def spec_from_json(data):
    """The spec in a ``preprocessing.json`` dict; other keys (``has_background``) are ignored.

    Keys missing from files written before they existed take `LEGACY_DEFAULTS`.

    Raises:
        ValueError: ``image_size`` or ``channels`` missing, or a bad value.
    """
    missing = [k for k in ("image_size", "channels") if k not in data]
    if missing:
        raise ValueError(f"preprocessing.json has no {' or '.join(missing)}: {data!r}.")
    values = {**LEGACY_DEFAULTS, **{k: data[k] for k in SPEC_KEYS if k in data}}
    return make_spec(values.pop("image_size"), values.pop("channels"), **values)


def _window(image, spec):
    """The centred crop window of `spec` (``aspect``, ``crop_fraction``)."""
    fraction = spec["crop_fraction"]
    if spec["aspect"] == "stretch" and fraction == 1.0:
        return image
    if spec["aspect"] == "center_square":
        return center_crop(image, fraction)
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    crop_h = tf.maximum(tf.cast(tf.cast(h, tf.float32) * fraction, tf.int32), 1)
    crop_w = tf.maximum(tf.cast(tf.cast(w, tf.float32) * fraction, tf.int32), 1)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return image[..., top:top + crop_h, left:left + crop_w, :]


def prepare_image(image, spec):
    """A decoded image -> the model input, exactly as evaluation prepares it.

    Pure TF ops: usable eagerly, in `tf.data.Dataset.map` and in an exported
    `tf.function`.

    Args:
        image: [H, W, C] (or a batch [B, H, W, C] of one size) image, any
            dtype, values in [0, 255]; C is converted to ``spec["channels"]``.
        spec: a preprocessing spec (`make_spec` / `spec_from_json`).

    Returns:
        float32 [(B,) H', W', channels] with ``(H', W') = spec["image_size"]``.

    Example:
        >>> spec = make_spec(224, 3, crop_fraction=0.875)
        >>> prepare_image(decode_image(tf.io.read_file(path), 3), spec)  # doctest: +SKIP
    """
    image = ensure_channels(image, spec["channels"])
    return resize(_window(image, spec), spec["image_size"], spec["resize_method"],
                  spec["antialias"])


def decode_and_prepare(image_bytes, spec):
    """Encoded image bytes (scalar string) -> the model input (`decode_image`, `prepare_image`)."""
    return prepare_image(decode_image(image_bytes, spec["channels"]), spec)
