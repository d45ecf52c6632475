r"""Our trainer (`train/fit.py`) against a plain Keras `fit` script, as whole processes.

The comparison of issue 19: `train/fit.py --config fashion_lt10_softmax --set epochs=1
--set steps_per_epoch=150 --set bn_reestimate_batches=0` (150 steps of batch 128,
then the final evaluation: validation for the thresholds and the test split)
against a plain script that loads the same task, builds the same ``small_cnn``,
compiles SGD with the same schedule-free learning rate and runs ``fit`` for 150
steps of batch 128, then one ``predict`` over the test split (``plain``), or over the
validation and test splits (``plain_val``: the same final evaluation as ours, whose
validation predictions pick the detection thresholds).

Variants of ours: XLA off / on (``jit_compile``) x ``steps_per_execution`` 1 / 8,
and on request ``ours_no_onednn`` (``TF_ENABLE_ONEDNN_OPTS=0``: TensorFlow's own
CPU kernels, to tell how much of XLA's CPU gap is oneDNN's).
Runs are interleaved (one of each variant per round, in a rotating order) and
medians of the wall time and the CPU time (user + system, from ``wait4``) are
reported, with ratios to the plain script. The steps/s of the training loop
alone is read from each run's own report line (ours: ``metrics.json``'s
``train_seconds``; plain: timed around ``fit``).

    python benchmarks/trainer_speed.py --rounds 3       # -> benchmarks/results/trainer_speed.json
    python benchmarks/trainer_speed.py --quick          # smoke run (20 steps, 1 round)
    python benchmarks/trainer_speed.py --mixed_float16  # on a GPU: mixed precision for both
    python benchmarks/trainer_speed.py --variants plain,ours,ours_no_onednn,ours_xla \
        --output benchmarks/results/trainer_speed_onednn.json

Goals (issue 19): ours / plain <= 1.0 in wall and CPU time (aim 0.9); XLA +
K = 8 >= 1.3x the training steps/s of ours with both off.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _machine import machine_info

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIG = "fashion_lt10_softmax"

# plain: fit, then predict the test split (the script); plain_val: the same final
# evaluation as ours (validation, whose predictions pick the thresholds, and test).
PLAIN = ("plain", "plain_val")
VARIANTS = {
    "ours": [],
    "ours_xla": ["jit_compile=true"],
    "ours_k8": ["steps_per_execution=8"],
    "ours_xla_k8": ["jit_compile=true", "steps_per_execution=8"],
    # TensorFlow's own kernels without oneDNN (what XLA's CPU backend is compared with).
    "ours_no_onednn": [],
}
# Environment changes per variant (not in the default set of variants).
VARIANT_ENV = {"ours_no_onednn": {"TF_ENABLE_ONEDNN_OPTS": "0"}}
DEFAULT_VARIANTS = ["ours", "ours_xla", "ours_k8", "ours_xla_k8"]

# The plain-Keras side: what a user would write instead of train/fit.py.
_PLAIN = r"""
import json, sys, time
steps, precision, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
eval_limit, with_val = int(sys.argv[4]), sys.argv[5] == "1"
import keras
from keras_fgvc.models import create_model
from keras_fgvc.training.experiments import get_config
from keras_fgvc.training.tasks import build_task
if precision != "float32":
    keras.mixed_precision.set_global_policy(precision)
config = get_config(name)
task = build_task(config)
keras.utils.set_random_seed(config.seed)
model = create_model("small_cnn", num_classes=task.num_classes, input_shape=(28, 28, 1),
                     weight_decay=config.weight_decay)
model.compile(optimizer=keras.optimizers.SGD(config.learning_rate, momentum=config.momentum),
              loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
x = task.train.images.astype("float32") / 255.0
y = {"logits": task.train.labels}
started = time.perf_counter()
model.fit(x, y, batch_size=config.batch_size, epochs=1, steps_per_epoch=steps, verbose=0)
train_seconds = time.perf_counter() - started
n = 0
for split in ([task.val, task.test] if with_val else [task.test]):
    images = split.images[:eval_limit] if eval_limit else split.images
    probabilities = model.predict(images.astype("float32") / 255.0,
                                  batch_size=config.eval_batch_size, verbose=0)
    n += len(probabilities["probabilities"])
print(json.dumps({"train_seconds": train_seconds, "predictions": n}))
"""


def _run(cmd, env):
    """(wall s, user + system CPU s, system s, stdout) of one child process."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=errors, text=True)
        stdout = proc.stdout.read()
        # wait4: this child's own rusage (RUSAGE_CHILDREN would sum every child so far).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        proc.stdout.close()
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{errors.read()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_stime, stdout


def _ours(variant, steps, precision, env, workdir, eval_limit):
    sets = ["epochs=1", f"steps_per_epoch={steps}", "bn_reestimate_batches=0",
            f"mixed_precision={precision}", f"max_eval_examples={eval_limit}",
            *VARIANTS[variant]]
    cmd = [sys.executable, os.path.join(REPO, "train", "fit.py"), f"--config={CONFIG}",
           f"--workdir={workdir}", *[f"--set={s}" for s in sets]]
    wall, cpu, system, _ = _run(cmd, dict(env, **VARIANT_ENV.get(variant, {})))
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    return wall, cpu, system, metrics.get("train_seconds")


def _plain(steps, precision, env, eval_limit, with_val=False):
    cmd = [sys.executable, "-c", _PLAIN, str(steps), precision, CONFIG, str(eval_limit),
           "1" if with_val else "0"]
    wall, cpu, system, out = _run(cmd, env)
    report = json.loads(out.strip().splitlines()[-1])
    return wall, cpu, system, report["train_seconds"]


def _summary(rows, steps):
    med = lambda key: statistics.median(r[key] for r in rows)
    out = {"runs": len(rows), "wall_s": round(med("wall_s"), 2), "cpu_s": round(med("cpu_s"), 2),
           "system_s": round(med("system_s"), 2), "all": rows}
    if all(r["train_s"] for r in rows):
        out["train_s"] = round(med("train_s"), 2)
        out["train_steps_per_s"] = round(steps / med("train_s"), 2)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="150 (--quick: 20)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated from {','.join([*PLAIN, *VARIANTS])} (default: "
                             f"{','.join([*PLAIN, *DEFAULT_VARIANTS])}; "
                             "--quick: plain,ours)")
    parser.add_argument("--eval_limit", type=int, default=0,
                        help="evaluate on this many val / test images (0 = all; smoke runs)")
    parser.add_argument("--quick", action="store_true", help="20 steps, 1 round, ours + plain.")
    parser.add_argument("--mixed_float16", action="store_true",
                        help="mixed_float16 for both sides (a GPU machine).")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "trainer_speed.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.variants = 1, args.variants or "plain,ours"
    args.variants = args.variants or ",".join([*PLAIN, *DEFAULT_VARIANTS])
    args.steps = args.steps or (20 if args.quick else 150)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in PLAIN and v not in VARIANTS]
    if unknown or "plain" not in variants:
        parser.error(f"--variants must include plain and come from "
                     f"{[*PLAIN, *VARIANTS]}; unknown: {unknown}")
    precision = "mixed_float16" if args.mixed_float16 else "float32"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    rows = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                if v in PLAIN:
                    wall, cpu, system, train = _plain(args.steps, precision, env, args.eval_limit,
                                                      with_val=v == "plain_val")
                else:
                    wall, cpu, system, train = _ours(
                        v, args.steps, precision, env, os.path.join(tmp, f"{v}-{r}"),
                        args.eval_limit)
                rows[v].append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                "system_s": round(system, 2),
                                "train_s": None if train is None else round(train, 2)})
                print(f"round {r + 1}/{args.rounds} {v:12s} wall {wall:6.1f} s  cpu {cpu:6.1f} s "
                      f"(system {system:5.1f})  train {train or float('nan'):6.1f} s", flush=True)
    summary = {v: _summary(rows[v], args.steps) for v in variants}
    plain = summary["plain"]
    ratios = {v: {"wall": round(s["wall_s"] / plain["wall_s"], 3),
                  "cpu": round(s["cpu_s"] / plain["cpu_s"], 3)}
              for v, s in summary.items() if v != "plain"}
    same_eval = {}
    if "plain_val" in summary:
        base = summary["plain_val"]
        same_eval = {v: {"wall": round(s["wall_s"] / base["wall_s"], 3),
                         "cpu": round(s["cpu_s"] / base["cpu_s"], 3)}
                     for v, s in summary.items() if v in VARIANTS}
    report = {
        "benchmark": "trainer_speed", "config": CONFIG, "steps": args.steps,
        "batch_size": 128, "rounds": args.rounds, "eval_limit": args.eval_limit,
        "quick": args.quick, "precision": precision,
        "variants": summary, "ratio_to_plain_fit": ratios,
        "ratio_to_plain_fit_same_evaluation": same_eval,
        "goal": {"ratio_to_plain_fit": 1.0, "xla_k8_speedup": 1.3},
        "machine": machine_info(device=_device()),
    }
    if "ours" in summary and "ours_xla_k8" in summary and summary["ours"].get("train_s"):
        report["xla_k8_speedup"] = round(
            summary["ours_xla_k8"]["train_steps_per_s"] / summary["ours"]["train_steps_per_s"], 3)
    if summary.get("ours", {}).get("train_s"):
        report["train_steps_per_s_vs_ours"] = {
            v: round(s["train_steps_per_s"] / summary["ours"]["train_steps_per_s"], 3)
            for v, s in summary.items() if v in VARIANTS and s.get("train_s")}
    if "ours" in ratios:
        report["meets_goal"] = ratios["ours"]["wall"] <= 1.0 and ratios["ours"]["cpu"] <= 1.0
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({"ratio_to_plain_fit": ratios,
                      "ratio_to_plain_fit_same_evaluation": same_eval,
                      "xla_k8_speedup": report.get("xla_k8_speedup")}, indent=1))
    print(f"wrote {args.output}")


def _device():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "cpu"


if __name__ == "__main__":
    main()
