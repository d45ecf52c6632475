r"""``make demo``: train, compare, export and serve the Fashion-BG rare-class detector.

    python -m keras_fgvc.demo [--artifacts artifacts] [--quick] [--port 0] [--seed 0]

Steps (each prints a numbered header and its time; training shows a progress bar):

1. The Fashion-BG task (rare Dress / Shirt / Bag in a sea of background) and
   its teacher, trained once and cached in ``$KERAS_FGVC_CACHE`` (default
   ``~/.cache/keras_fgvc``).
2. Plain fine-tuning (config ``fashion_bg_ft``).
3. Background splitting + fixed background logit (``fashion_bg_split_fixed``).
   Both fine-tune the teacher's trunk with fresh heads (``init_trunk="teacher"``),
   the paper's protocol.
4. Foreground mAP and F1 of both on the test split (`keras_fgvc.metrics`),
   a precision-recall plot per rare class.
5. Export of the background-splitting detector as the next SavedModel version.
6. The loopback gRPC server in a child process, on a free loopback port; a
   few test images are sent as PNG bytes through the gRPC client; the server
   is shut down (also on error or Ctrl-C; the child also gets SIGTERM if this
   process dies).

Re-running: the trainer resumes a workdir whose ``config.json`` matches the
settings of this run (a finished run is restored and re-evaluated, not
retrained); a workdir written with other settings (``--quick`` vs full,
another ``--seed``) is deleted and trained again. Every run exports the next
version.

Output (``--artifacts``): ``workdirs/<config>/`` (trainer workdirs),
``models/fashion_bg_detector/<version>/`` (+ ``models.config``),
``plots/pr_<class>.png``, ``samples/*.png`` (the images sent),
``server.log`` and ``results.json``.

The steps are functions of `keras_fgvc.demo` (``run`` calls them all).
"""

import os
import signal
import sys
import time

from absl import app, flags, logging

_STARTED = time.perf_counter()

flags.DEFINE_string("artifacts", "artifacts", "Output folder.")
flags.DEFINE_bool("quick", False, "Tiny run (tests).")
flags.DEFINE_integer("port", 0, "gRPC port (0 = a free one).")
flags.DEFINE_integer("seed", 0, "Data split and training seed.")
FLAGS = flags.FLAGS

# A usage error exits with 2, as a command-line parser's does.
_USAGE_EXIT_CODE = 2


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}",
                             exitcode=_USAGE_EXIT_CODE)
    if not 0 <= FLAGS.port < 65536:
        raise app.UsageError(f"--port={FLAGS.port} is not in [0, 65535].",
                             exitcode=_USAGE_EXIT_CODE)
    if not FLAGS["verbosity"].present:  # the steps' own output only (--verbosity=0: INFO logs)
        logging.set_verbosity(logging.WARNING)
    from keras_fgvc.startup import quiet_tensorflow_import

    quiet_tensorflow_import()  # no CPU-only CUDA / absl start-up noise before our output
    from keras_fgvc.demo import MODEL_NAME, run

    signal.signal(signal.SIGTERM, _raise_interrupt)  # run the clean-up, as on Ctrl-C
    try:
        result = run(FLAGS.artifacts, quick=FLAGS.quick, port=FLAGS.port, seed=FLAGS.seed,
                     started=_STARTED)
    except KeyboardInterrupt:
        print("\nInterrupted; the server (if started) was stopped.", file=sys.stderr)
        return 130
    artifacts = os.path.abspath(FLAGS.artifacts)
    print(f"\nDone in {result['timings_s']['total']:.0f} s "
          f"(CPU {result['cpu_time_s']['total']:.0f} s). "
          f"Results: {os.path.join(artifacts, 'results.json')}")
    print(f"Serve it yourself: python serving/server.py --port=8500 --model_name={MODEL_NAME} "
          f"--model_base_path={os.path.join(artifacts, 'models', MODEL_NAME)}\n"
          f"  then: python serving/client.py --server 127.0.0.1:8500 --model {MODEL_NAME} "
          f"{os.path.join(artifacts, 'samples')}/*.png")
    return 0


if __name__ == "__main__":
    app.run(main)
