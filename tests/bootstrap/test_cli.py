"""The whole loop through the command line: init -> round -> serve + simulate -> ingest ->
round 2 -> simulate -> ingest -> export, on tiny folders (3 categories, an outside class).

`serve` runs as a real process on a free port, and ``python -m keras_fgvc.bootstrap`` is
run as a process for the cheap commands; the commands that load TensorFlow (init, round,
export) run the same entry point (`__main__.main` after absl parses the flags) in the test
process, which has TensorFlow loaded already.
"""

import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from keras_fgvc.bootstrap.store import open_store
from keras_fgvc.serving.launch import free_port
from tests.bootstrap.loop_data import CATEGORIES, make_pool, make_seed_dir, write_truth

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["epochs=1", "steps_per_epoch=2", "batch_size=16", "refresh_every_steps=2",
        "refresh_max_examples=64", "bn_reestimate_batches=1", "warmup_epochs=0",
        "decay_epochs=()", "eval_batch_size=64"]


def cli(*args, check=True):
    """``python -m keras_fgvc.bootstrap ARGS`` in a process."""
    done = subprocess.run([sys.executable, "-m", "keras_fgvc.bootstrap", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if check and done.returncode:
        raise AssertionError(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


def cli_here(capsys, *args, check=True):
    """The same entry point in this process: absl parses ARGS, then `main` runs."""
    from keras_fgvc.bootstrap import __main__ as entry

    entry.FLAGS.unparse_flags()
    capsys.readouterr()
    code = 0
    try:
        entry.main(entry.FLAGS(["keras_fgvc.bootstrap", *args]))
    except SystemExit as stop:  # main exits with "error: ..." on bad input
        code = stop.code
    finally:
        entry.FLAGS.unparse_flags()
    out = capsys.readouterr()
    if check and code:
        raise AssertionError(f"{args[0]} failed: {code}\n{out.out[-3000:]}")
    return subprocess.CompletedProcess(args, 1 if code else 0, out.out,
                                       code if isinstance(code, str) else out.err)


def _wait(url, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/api/status", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("serve did not answer")


def _members(db, round_index):
    with open_store(db) as store:
        return {kind: {(p, c) for _, p, c, _, r in store.members(round_index, kind)
                       if r == round_index} for kind in ("positive", "hard_negative")}


def _expected(db, round_index):
    """S / H additions the decisions of a round call for: accepted -> S, rejected, selected
    and asking the argmax -> H (unsure, rejected uniform-only candidates and rejected recall
    probes left out)."""
    with open_store(db) as store:
        outcomes = store.outcomes(round_index)
    return {"positive": {(t["path"], t["category_index"]) for t, o in outcomes if o == "accept"},
            "hard_negative": {(t["path"], t["category_index"]) for t, o in outcomes
                              if o == "reject" and t["selected"] and t["asks_argmax"]}}


@pytest.mark.slow
def test_the_whole_loop_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))
    root = str(tmp_path)
    seed = make_seed_dir(os.path.join(root, "seed"), per_class=6, background=3,
                         definitions={"bag": ("DEFINITION.txt", "A bag.")})
    truth = write_truth(os.path.join(root, "truth.csv"),
                        make_pool(os.path.join(root, "pool"), per_class=6, outside=8))
    db = os.path.join(root, "project.db")
    out = cli_here(capsys, "init", "--db", db, "--seed_dir", os.path.join(root, "seed"),
                   "--pool_dir", os.path.join(root, "pool"), "--rounds", "2", "--truth", truth,
                   "--shard_size", "4", "--uniform_share", "0.25", "--gold_share", "0.3",
                   "--threshold", "0.0")  # 2 training steps make an unsure model: select all
    assert "Pool: 26 images in 2 subsets (13, 13)" in out.stdout
    refused = cli("ingest", "--db", db, check=False)
    assert refused.returncode and "no open round to ingest" in refused.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "keras_fgvc.bootstrap", "serve", "--db", db,
                               "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        _wait(url, server)
        for index, error_rate in ((1, "0.3"), (2, "0.0")):
            out = cli_here(capsys, "round", "--db", db, *[f"--set={o}" for o in TINY])
            assert f"Round {index} is open for labelling" in out.stdout
            # every candidate is a task (threshold 0); 4 of the 13 are gold as well
            assert "4 gold)" in out.stdout, out.stdout
            busy = cli("round", "--db", db, check=False)
            assert busy.returncode and f"round {index} is open for labelling" in busy.stderr
            labelled = json.loads(cli_here(capsys, "simulate", "--db", db, "--url", url,
                                           "--error_rate", error_rate, "--labeler",
                                           f"sim{index}", "--seed", "3").stdout)
            assert labelled["decisions"] > 0
            cli_here(capsys, "ingest", "--db", db)
            assert _members(db, index) == _expected(db, index)  # S and H grew as decided
            if index == 1:
                assert _expected(db, 1)["hard_negative"], "no rejection: raise the error rate"
    finally:
        server.terminate()
        server.wait(30)

    # round 2 trained on S_1 and H_1: its manifest holds them
    workdir = os.path.splitext(db)[0] + ".rounds"
    with open(os.path.join(workdir, "round_2", "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    names = list(CATEGORIES)
    hard = {(r["path"], names.index(r["hard_negative_for"])) for r in rows
            if r["hard_negative_for"]}
    assert hard == _expected(db, 1)["hard_negative"]
    positives = {(r["path"], names.index(r["label"])) for r in rows
                 if r["label"] in names}
    assert positives == {(p, names.index(c)) for c in names for p in seed[c]} | \
        _expected(db, 1)["positive"]
    with open(os.path.join(workdir, "round_2", "lineage.json")) as f:
        lineage = json.load(f)
    assert lineage["overrides"] == TINY and lineage["config"] == "bootstrap_triplet_a_hn"
    assert lineage["training_set"]["hard_negatives_from_decisions"] == len(hard)
    assert lineage["decisions_before"] == labelled_total(db, 2) > 0
    _served_model_carries(os.path.join(workdir, "round_2", "train"), lineage, root)

    done = cli("round", "--db", db, check=False)
    assert done.returncode and "all 2 rounds are done" in done.stderr
    status = cli("status", "--db", db).stdout
    assert "Round 2 [closed]" in status and "Round 1 [closed]" in status
    assert re.search(r"selection \(from the uniform sample\): precision \d+\.\d% \[[\d.]+, "
                     r"[\d.]+\] \(n=\d+\), recall ", status), status
    assert "Gold accuracy of sim1: " in status and "Gold accuracy of sim2: " in status
    out = os.path.join(root, "grown")
    cli_here(capsys, "export", "--db", db, "--out", out)
    grown = {c: len([f for f in os.listdir(os.path.join(out, "rare", c)) if f.endswith(".png")])
             for c in names}
    with open(os.path.join(out, "rare", "bag", "DEFINITION.txt")) as f:
        assert f.read() == "A bag.\n"  # the seed's definition, for the next `init`
    with open_store(db) as store:
        final = store.members(2, "positive")
        negatives = store.members(2, "hard_negative")
    assert grown == {c: sum(1 for m in final if m[2] == i) for i, c in enumerate(names)}
    exported_negatives = sum(len(os.listdir(os.path.join(out, "hard_negatives", c)))
                             for c in os.listdir(os.path.join(out, "hard_negatives")))
    assert exported_negatives == len(negatives) > 0
    assert len(os.listdir(os.path.join(out, "background"))) == 3
    with open(os.path.join(out, "lineage.json")) as f:
        exported = json.load(f)
    assert [r["round"] for r in exported["rounds"]] == [1, 2]
    assert exported["rounds"][1]["model_version"].startswith("r2-")
    with open(os.path.join(out, "decisions.jsonl")) as f:
        assert sum(1 for _ in f) == labelled_total(db, 3)


def _served_model_carries(train_dir, lineage, root):
    """Round 2's model, exported from its trainer workdir and served, says what built it."""
    from keras_fgvc.export import saved_model
    from keras_fgvc.serving import server
    from keras_fgvc.serving.client import PredictionClient

    base = os.path.join(root, "models")
    path = saved_model.export_from_workdir(train_dir, base, "grown", warmup_batch_sizes=())
    with open(os.path.join(path, "assets", "lineage.json")) as f:
        assert json.load(f) == lineage
    options = server.ServerOptions(port=0, model_name="grown",
                                   model_base_path=os.path.join(base, "grown"))
    model_server = server.ModelServer(options).start()
    try:
        with PredictionClient(f"127.0.0.1:{model_server.port}", timeout_s=30) as client:
            assert client.lineage("grown") == lineage
            names, _ = client.labels("grown")
            assert names == list(CATEGORIES)
    finally:
        model_server.stop(grace_seconds=0)


def labelled_total(db, before_round):
    with open_store(db) as store:
        return sum(1 for d in store.iter_decisions() if d["round"] < before_round)


def test_status_text_reads_the_quality_figures():
    from keras_fgvc.bootstrap.__main__ import format_status

    status = {"project": {"rounds": 1}, "categories": [], "background": 0,
              "rounds": [{"index": 1, "status": "labelling", "model_version": "r1", "tasks": 9,
                          "pending": 1, "accepted": 5, "rejected": 2, "unsure": 1}],
              "labelers": {"ann": 5, "bob": 3}}
    quality = {1: {"overall": {"precision": {"value": 0.75, "low": 0.5, "high": 0.9, "k": 3,
                                             "n": 4},
                               "recall": {"value": None, "low": None, "high": None, "k": 0,
                                          "n": 0}}}}
    text = format_status(status, quality,
                         agreement={"pairs": [{"labelers": ["ann", "bob"], "n": 3,
                                               "kappa": 0.4}], "tasks": 3},
                         gold={"ann": {"value": 1.0, "low": 0.44, "high": 1.0, "k": 3, "n": 3}})
    assert ("  selection (from the uniform sample): precision 75.0% [50.0, 90.0] (n=4), "
            "recall n/a (no items)") in text
    assert "Gold accuracy of ann: 100.0% [44.0, 100.0] (n=3)" in text
    assert "Cohen's kappa ann / bob: 0.400 over 3 shared tasks" in text
    assert "corrected" not in text  # no gold decided: nothing to correct with
    quality[1]["labeler_error"] = {"false_accept": {"value": 0.1, "k": 2, "n": 20},
                                   "false_reject": {"value": 0.0, "k": 0, "n": 19}}
    quality[1]["overall"]["precision_corrected"] = {"value": 0.7, "low": 0.4, "high": 0.95,
                                                    "n": 4}
    quality[1]["overall"]["recall_corrected"] = {"value": None, "low": 0.0, "high": 1.0,
                                                 "n": 1, "reason": "fewer than 2 answers"}
    assert ("  corrected for labeler errors (gold: 2/20 false accepts, 0/19 false rejects): "
            "precision 70.0% [40.0, 95.0] (n=4), recall n/a (fewer than 2 answers)"
            ) in format_status(status, quality)
