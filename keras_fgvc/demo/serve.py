"""The demo's last step: serve the export over gRPC and query it with held-out test images.

The loopback server (``serving/server.py``) runs in a child process started by
`keras_fgvc.serving.launch` on a free (or the given) 127.0.0.1 port; it is
stopped on the way out, on an error or Ctrl-C too, and gets SIGTERM if the
demo process dies.
"""

import os

from keras_fgvc.demo.steps import MODEL_NAME
from keras_fgvc.serving.launch import port_open, start_server

SAMPLES_PER_CLASS = 2


def pick_samples(labels, num_classes, seed):
    """`SAMPLES_PER_CLASS` test indices of every class (background included), seeded."""
    import numpy as np

    rng = np.random.default_rng([seed, 6])
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        picks.extend(rng.choice(members, min(SAMPLES_PER_CLASS, len(members)), replace=False))
    return [int(i) for i in picks]


def start_detector_server(model_dir, port, log_path, model_name=MODEL_NAME):
    """The loopback server for `model_dir` (integer versions) in a child process (not waited).

    Its own session: a Ctrl-C reaches only the demo, whose clean-up stops the server.
    """
    return start_server([f"--port={port}", f"--model_name={model_name}",
                         f"--model_base_path={model_dir}"], log_path, new_session=True)


def _write_samples(split, picks, class_names, directory):
    """The picked test images as PNG files; returns their names and bytes."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    files, pngs = [], []
    for n, i in enumerate(picks):
        png = tf.io.encode_png(split.images[i]).numpy()
        name = f"{n:02d}_test{i}_{class_names[split.labels[i]].replace(' ', '_').lower()}.png"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(png)
        files.append(name)
        pngs.append(png)
    return files, pngs


def serve_and_query(detector, model_dir, version, artifacts, port=0, seed=0,
                    model_name=MODEL_NAME):
    """Step 6: start the server, wait for `version`, Predict sample PNGs, stop the server.

    Args:
        detector: the exported method's `train_method` result (test split,
            class names and the Keras model's test probabilities).
        model_dir: the model's directory of versions (``models/<model_name>``).
        version: the exported version to wait for.
        artifacts: output folder (``samples/*.png``, ``server.log``).
        port: gRPC port (0: a free one).
        seed: seed of the sample choice.

    Returns:
        The ``serving`` report of ``results.json``.
    """
    from keras_fgvc.serving.client import PredictionClient, detections

    split, class_names = detector["test_split"], detector["class_names"]
    picks = pick_samples(split.labels, len(class_names), seed)
    local_scores = detector["probabilities"][picks, 1:]
    files, pngs = _write_samples(split, picks, class_names, os.path.join(artifacts, "samples"))
    server = start_detector_server(model_dir, port, os.path.join(artifacts, "server.log"),
                                   model_name)
    try:
        port = server.wait_until_listening(timeout_s=300)
        print(f"server pid {server.pid} on 127.0.0.1:{port}; waiting for version {version} "
              "to be AVAILABLE (GetModelStatus)", flush=True)
        with PredictionClient(f"127.0.0.1:{port}", timeout_s=60.0) as client:
            served_version = client.wait_until_available(model_name, version, timeout_s=300)
            names, thresholds = client.labels(model_name, version)
            outputs = client.predict_image_bytes(model_name, pngs, version)
        print(f"Predict: {len(pngs)} PNG images -> {model_name} version {served_version}")
        served = []
        for n, hits in enumerate(detections(outputs, names)):
            truth = class_names[split.labels[picks[n]]]
            found = ", ".join(f"{c} ({s:.2f})" for c, s in hits) or \
                f"background ({float(outputs['background'][n]):.2f})"
            mark = "ok" if [c for c, _ in hits] == ([] if truth == class_names[0] else [truth]) \
                else "--"
            print(f"  {mark} {files[n]:<34} true: {truth:<11} detected: {found}")
            served.append({"file": files[n], "true_label": truth,
                           "detected": [[c, round(s, 4)] for c, s in hits],
                           "scores": [float(s) for s in outputs["scores"][n]],
                           "background": float(outputs["background"][n])})
    finally:
        exit_code = server.stop()
    diff = float(abs(outputs["scores"] - local_scores).max())
    print(f"server stopped (exit code {exit_code}); served vs Keras scores: max |diff| {diff:.2e}")
    return {"port": port, "version": int(served_version), "class_names": names,
            "thresholds": thresholds, "predictions": served, "server_exit_code": exit_code,
            "port_closed_after_stop": not port_open(port),
            "max_abs_diff_vs_keras": diff}
