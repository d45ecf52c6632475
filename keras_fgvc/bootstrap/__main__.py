r"""Grow a data set with humans in the loop: ``python -m keras_fgvc.bootstrap COMMAND --db DB``.

    init      --seed_dir SEED --pool_dir POOL --rounds K [--config NAME] [--truth CSV]
    round     [--set key=value ...] [--strategy one_device|mirrored]
    serve     [--port 8080] [--host 127.0.0.1] [--auth_token T]
    ingest    [--allow_pending]
    status    [--json]
    export    --out DIR [--link]
    simulate  --url URL --error_rate E --labeler NAME [--seed S] [--max_tasks N]

DB is a SQLite file (created by ``init``) or ``postgresql://...``. Every
command can be killed and run again: nothing is lost or counted twice. See
the README section "Growing a data set" for a walk-through.
"""

import json
import sys

from absl import app, flags

from keras_fgvc.startup import quiet_tensorflow_import

COMMANDS = ("init", "round", "serve", "ingest", "status", "export", "simulate")

FLAGS = flags.FLAGS
flags.DEFINE_string("db", None, "Project database: a SQLite file or postgresql://...")
# init
flags.DEFINE_string("seed_dir", None, "init: SEED/rare/<category>/... [+ SEED/background/...].")
flags.DEFINE_string("pool_dir", None, "init: the folder of candidate images (any depth).")
flags.DEFINE_integer("rounds", None, "init: k, the number of rounds (pool subsets).")
flags.DEFINE_string("config", "bootstrap_triplet_a_hn", "init: training config of every round.")
flags.DEFINE_string("truth", None, "init: optional CSV path,label of known labels.")
flags.DEFINE_string("workdir", None, "init: where rounds train (default: beside a SQLite DB).")
flags.DEFINE_float("threshold", 0.5, "init: confidence above which a candidate is a task.")
flags.DEFINE_float("uniform_share", 0.1, "init: share of each scored subset sampled uniformly.")
flags.DEFINE_float("probe_share", 0.0, "init: chance that a uniform-sample task asks about "
                   "another category than the model's argmax (the recall probes: an unbiased "
                   "recall estimate from accurate labelers; 0 asks the argmax only, whose "
                   "recall estimate is an upper bound). See the README.")
flags.DEFINE_float("gold_share", 0.0, "init: known-label items mixed in, per task.")
flags.DEFINE_integer("overlap", 1, "init: labelers per task (majority vote when > 1).")
flags.DEFINE_float("lease_seconds", 600, "init: a handed-out task returns to the queue after.")
flags.DEFINE_integer("seed", 0, "init: seed of the pool split and samples; simulate: errors.")
flags.DEFINE_integer("image_size", None, "init: model input size (default: the config's).")
flags.DEFINE_integer("channels", None, "init: 1 or 3 (default: the config's).")
flags.DEFINE_integer("shard_size", None, "init / round: candidates per scoring shard (1024).")
# round
flags.DEFINE_multi_string("set", [], "round: training config override key=value (repeatable).")
flags.DEFINE_enum("strategy", "one_device", ("one_device", "mirrored"), "round: tf.distribute.")
flags.DEFINE_integer("num_cpu_devices", 2, "round: logical CPUs for --strategy=mirrored.")
flags.DEFINE_integer("batch_size", None, "round: scoring batch size (256).")
# serve
flags.DEFINE_string("host", "127.0.0.1", "serve: address (others need --auth_token).")
flags.DEFINE_integer("port", 8080, "serve: port.")
flags.DEFINE_string("auth_token", None, "serve / simulate: shared secret of the page and API.")
# ingest, status, export, simulate
flags.DEFINE_bool("allow_pending", False, "ingest: close the round with tasks still pending.")
flags.DEFINE_bool("json", False, "status: print JSON.")
flags.DEFINE_string("out", None, "export: a new folder for the grown data set.")
flags.DEFINE_bool("link", False, "export: hard-link images instead of copying (same disk).")
flags.DEFINE_string("url", None, "simulate: the server, e.g. http://127.0.0.1:8080")
flags.DEFINE_float("error_rate", 0.0, "simulate: probability a decision is flipped.")
flags.DEFINE_string("labeler", None, "simulate: the labeler's name.")
flags.DEFINE_integer("max_tasks", None, "simulate: stop after this many decisions.")


def _require(*names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise app.UsageError(f"missing {', '.join(missing)}")


def _init():
    _require("seed_dir", "pool_dir", "rounds")
    quiet_tensorflow_import()
    from keras_fgvc.bootstrap.project import init_project

    settings = {k: getattr(FLAGS, k) for k in ("threshold", "uniform_share", "probe_share",
                                               "gold_share", "overlap", "lease_seconds",
                                               "seed")}
    if FLAGS.shard_size:
        settings["shard_size"] = FLAGS.shard_size
    init_project(FLAGS.db, FLAGS.seed_dir, FLAGS.pool_dir, FLAGS.rounds, config=FLAGS.config,
                 truth=FLAGS.truth, workdir=FLAGS.workdir, image_size=FLAGS.image_size,
                 channels=FLAGS.channels, **settings)


def _round():
    from keras_fgvc.bootstrap.rounds import next_round, run_round
    from keras_fgvc.bootstrap.store import open_store

    with open_store(FLAGS.db) as store:
        next_round(store)  # a round that cannot run says so before TensorFlow loads
    quiet_tensorflow_import()
    from keras_fgvc.training import strategy as strategy_lib

    if FLAGS.strategy == "mirrored":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            strategy_lib.configure_logical_cpus(FLAGS.num_cpu_devices)
    strategy = strategy_lib.make_strategy(FLAGS.strategy)
    run_round(FLAGS.db, FLAGS.set, strategy=strategy, shard_size=FLAGS.shard_size,
              batch_size=FLAGS.batch_size)


def _serve():
    from keras_fgvc.bootstrap.web import serve

    serve(FLAGS.db, host=FLAGS.host, port=FLAGS.port, auth_token=FLAGS.auth_token)


def _ingest():
    from keras_fgvc.bootstrap.store import open_store

    with open_store(FLAGS.db) as store:
        rounds = [r for r in store.rounds() if r["status"] != "closed"]
        if not rounds:
            raise ValueError("no open round to ingest: run `round` first.")
        if rounds[-1]["status"] != "labelling":
            raise ValueError(f"round {rounds[-1]['index']} is still {rounds[-1]['status']}: run "
                             "`round` again to finish it, then label, then ingest.")
        summary = store.ingest(rounds[-1]["index"], allow_pending=FLAGS.allow_pending)
    print(f"Round {summary['round']} closed: {summary['accepted']} accepted (joined S), "
          f"{summary['hard_negatives']} rejected above the threshold (joined H), "
          f"{summary['rejected'] - summary['hard_negatives']} other rejections and "
          f"{summary['unsure']} unsure left out, {summary['pending']} pending.")


def _status():
    from keras_fgvc.bootstrap.store import open_store

    with open_store(FLAGS.db) as store:
        status = store.status()
        errors = store.labeler_error()  # one read of the gold tasks for every round
        quality = {r["index"]: store.selection_quality(r["index"], errors)
                   for r in store.rounds()}
        people = {"agreement": store.agreement(), "gold": store.gold()}
    if FLAGS.json:
        print(json.dumps({"status": status, "quality": quality, **people}, indent=2,
                         default=str))
        return
    print(format_status(status, quality, **people))


def _share(p):
    """'71.9% [70.1, 73.6] (n=1,234)' for a `stats.proportion` or `stats.ratio_estimate`
    dict; 'n/a (why)' without a value."""
    if not p or p.get("value") is None:
        return f"n/a ({p.get('reason', 'no items') if p else 'no items'})"
    return (f"{100 * p['value']:.1f}% [{100 * p['low']:.1f}, {100 * p['high']:.1f}] "
            f"(n={p['n']:,})")


def format_status(status, quality, agreement=None, gold=None):
    """The plain-text `status` report: categories (S, H), rounds and their tasks, the
    selection's precision and recall (95% intervals), gold accuracy, kappa."""
    lines = [f"Project: {json.dumps(status['project'], sort_keys=True)}",
             "Categories (seed / S / H over all rounds):"]
    for c in status["categories"]:
        lines.append(f"  {c['name']:<24} {c['seed']:>6} {c['positives']:>7} "
                     f"{c['hard_negatives']:>7}")
    lines.append(f"Background: {status['background']}")
    for r in status["rounds"]:
        overall = (quality.get(r["index"]) or {}).get("overall") or {}
        lines.append(f"Round {r['index']} [{r['status']}] {r['model_version']}: {r['tasks']} "
                     f"tasks, {r['pending']} pending, {r['accepted']} accepted, "
                     f"{r['rejected']} rejected, {r['unsure']} unsure")
        if overall:
            bound = ("" if overall.get("recall_method") == "probes" else
                     " (argmax questions only: an upper bound)")
            lines.append(f"  selection (from the uniform sample): precision "
                         f"{_share(overall.get('precision'))}, recall "
                         f"{_share(overall.get('recall'))}{bound}")
        errors = (quality.get(r["index"]) or {}).get("labeler_error")
        if overall and errors:
            fa, fr = errors["false_accept"], errors["false_reject"]
            lines.append(f"  corrected for labeler errors (gold: {fa['k']}/{fa['n']} false "
                         f"accepts, {fr['k']}/{fr['n']} false rejects): precision "
                         f"{_share(overall.get('precision_corrected'))}, recall "
                         f"{_share(overall.get('recall_corrected'))}")
    if status.get("labelers"):
        lines.append(f"Decisions per labeler: {status['labelers']}")
    for labeler, accuracy in sorted((gold or {}).items()):
        lines.append(f"Gold accuracy of {labeler}: {_share(accuracy)}")
    for pair in (agreement or {}).get("pairs", []):
        kappa = "undefined" if pair["kappa"] is None else f"{pair['kappa']:.3f}"
        lines.append(f"Cohen's kappa {' / '.join(pair['labelers'])}: {kappa} over "
                     f"{pair['n']} shared tasks")
    return "\n".join(lines)


def _export():
    _require("out")
    quiet_tensorflow_import()
    from keras_fgvc.bootstrap.export import export_project

    export_project(FLAGS.db, FLAGS.out, link=FLAGS.link)


def _simulate():
    _require("url", "labeler")
    from keras_fgvc.bootstrap.simulate import simulate

    result = simulate(FLAGS.db, FLAGS.url, FLAGS.error_rate, FLAGS.labeler, seed=FLAGS.seed,
                      max_tasks=FLAGS.max_tasks, auth_token=FLAGS.auth_token)
    print(json.dumps(result, sort_keys=True))


_RUN = {"init": _init, "round": _round, "serve": _serve, "ingest": _ingest,
        "status": _status, "export": _export, "simulate": _simulate}


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m keras_fgvc.bootstrap {{{'|'.join(COMMANDS)}}} "
                             f"--db DB [flags]; got {' '.join(argv[1:]) or 'no command'}")
    if not FLAGS.db:
        raise app.UsageError("--db is required (a SQLite file or postgresql://...).")
    from keras_fgvc.bootstrap.db import SchemaVersionError

    try:
        _RUN[argv[1]]()
    except (ValueError, FileNotFoundError, SchemaVersionError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
