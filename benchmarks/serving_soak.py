r"""Soak of the loopback server: 8 gRPC + 4 REST clients, malformed requests, two hot swaps.

    python benchmarks/serving_soak.py            # 60 s -> benchmarks/results/serving_soak.json
    python benchmarks/serving_soak.py --quick    # a few seconds (a smoke run)

Goals (issue 18): 0 failed valid requests, server RSS growth < 100 MB, p99 of
valid requests during the soak within 3x the quiet p99 (the same clients
without malformed requests or swaps). The engine is `keras_fgvc.serving.soak`.
"""

import json
import os
import platform

from absl import app, flags

flags.DEFINE_bool("quick", False, "A few seconds instead of 60.")
flags.DEFINE_float("duration_s", 60.0, "Soak duration (full run).")
flags.DEFINE_float("quiet_s", 15.0, "Quiet (reference) phase duration (full run).")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "results", "serving_soak.json"), "JSON output path.")


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from keras_fgvc.serving import soak

    f = flags.FLAGS
    duration, quiet = (6.0, 3.0) if f.quick else (f.duration_s, f.quiet_s)
    result = soak.run_soak(duration_s=duration, quiet_s=quiet)
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "python": platform.python_version(), "tensorflow": tf.__version__}
    os.makedirs(os.path.dirname(f.output), exist_ok=True)
    with open(f.output, "w") as out:
        json.dump(result, out, indent=1)
    print(json.dumps({k: result[k] for k in ("failed_valid_requests", "p99_ratio_soak_to_quiet",
                                              "server_rss_mb", "goals")}, indent=1))
    print(f"wrote {f.output}")


if __name__ == "__main__":
    app.run(main)
