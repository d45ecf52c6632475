"""Entry-point start-up: TensorFlow imported without alarming noise on a machine with no GPU.

On a CPU-only host TensorFlow's import prints, before any output of ours,
absl's "All log messages before absl::InitializeLog() ..." warning, "Could not
find cuda drivers" and "failed call to cuInit: INTERNAL: CUDA error", none
of which is a problem there. `quiet_tensorflow_import` (called first thing by
the entry points) imports TensorFlow and initialises its devices with
stderr captured, then writes back every captured line that is not one of
those known messages, so real errors still show. On a host with an NVIDIA
device (``/dev/nvidia*``, ``/proc/driver/nvidia``) nothing is filtered: there
the CUDA messages matter. ``KERAS_FGVC_VERBOSE_STARTUP=1`` turns it off.
"""

import glob
import os
import re
import sys
import tempfile

# Messages TensorFlow prints on every CPU-only start; never errors there.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc"
    r"|To enable the following instructions:"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc.*already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|oneDNN custom operations are on")


def has_gpu_hardware():
    """Whether this host shows an NVIDIA device (no CUDA call made)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/proc/driver/nvidia")


def quiet_tensorflow_import():
    """Import TensorFlow (and find its devices) with the CPU-only start-up noise removed."""
    if "tensorflow" in sys.modules or os.environ.get("KERAS_FGVC_VERBOSE_STARTUP") == "1":
        return
    if has_gpu_hardware():
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO off; warnings and errors kept
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(True)
                if not NOISE.search(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
