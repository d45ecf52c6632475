r"""Ask a TF Serving (or loopback) server which rare classes are in each image.

    python serving/client.py --server 127.0.0.1:8500 --model detector img1.jpg img2.png

prints one line per image: the detected rare classes with their scores, or
"background".
"""

import sys

from keras_fgvc.startup import quiet_tensorflow_import

quiet_tensorflow_import()  # before absl and TF print their CPU-only start-up noise

import grpc  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_fgvc.serving import client  # noqa: E402

flags.DEFINE_string("server", "127.0.0.1:8500", "host:port of the gRPC model server.")
flags.DEFINE_string("model", "default", "Served model name.")
flags.DEFINE_integer("version", None, "Model version (default: latest).")
flags.DEFINE_float("timeout", 10.0, "Deadline per call, in seconds (retries included).")


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give one or more image files.")
    f = flags.FLAGS
    try:
        lines = client.classify_files(f.server, f.model, paths, f.version, f.timeout)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    app.run(main)
