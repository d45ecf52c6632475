"""`export`: the grown data set, its hard negatives, the decisions and the lineage, in one folder.

    OUT/rare/<category>/...            S_k: seed images + accepted candidates,
                                       and DEFINITION.txt (the category's definition)
    OUT/background/...                 the seed background (if any)
    OUT/hard_negatives/<category>/...  H_k: candidates rejected for that category
    OUT/tfrecords/train-*.tfrecord     S_k + background (label 0 = background,
                                       1..N = the categories in sorted order:
                                       the image-folder task's label contract)
    OUT/tfrecords/hard_negatives-*.tfrecord   H_k (label = the category, 1..N)
    OUT/tfrecords/labels.txt           background + categories, one per line
    OUT/files.csv                      exported file, original path, image id,
                                       kind, category, round it joined
    OUT/decisions.jsonl                every decision (`Store.iter_decisions`)
    OUT/lineage.json                   settings, every round's lineage, sizes

OUT/rare + OUT/background is the layout ``train/fit.py --config folder_bg_*
--set data_dir=OUT`` reads (it needs a background folder; the folder task
ignores ``hard_negatives/``). S_k and H_k are those of the last ingested
round; an open round's decisions are not in them until ``ingest``.

Files are copied (``link=True``: hard-linked where the disk allows, else
copied); a name already taken in a folder gets the image id appended, so no
file is overwritten. Everything is written into ``OUT.tmp-<pid>`` beside OUT
and renamed to OUT at the end: OUT appears whole or not at all. OUT must not
exist (an empty folder is replaced); a killed export's temporary folder is
removed by the next export (one whose process still runs is left alone).
"""

import csv
import glob
import json
import os
import shutil
import time

from keras_fgvc.bootstrap.project import DEFINITION_FILES
from keras_fgvc.data.folder_task import BACKGROUND
from keras_fgvc.export.versions import pid_alive


def _redacted(db):
    if "://" not in db:
        return os.path.abspath(db)
    from sqlalchemy.engine import make_url

    return make_url(db).render_as_string(hide_password=True)


def _place(source, folder, image_id, taken, link):
    """Copy / link `source` into `folder` under a free name; returns the new path."""
    name, used = os.path.basename(source), taken.setdefault(folder, set())
    stem, ext = os.path.splitext(name)
    k = 1
    while name in used:  # `stem-<id>` may itself be another image's name: count on
        name = f"{stem}-{image_id}{ext}" if k == 1 else f"{stem}-{image_id}-{k}{ext}"
        k += 1
    used.add(name)
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    if link:
        try:
            os.link(source, target)
            return target
        except OSError:
            pass  # another disk, or links not allowed: copy
    shutil.copy2(source, target)
    return target


def _check_out(out):
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"{out} already exists and is not an empty folder; export writes a "
                         "new folder and never overwrites one: give another --out.")
    for stale in glob.glob(f"{glob.escape(out)}.tmp-*"):
        pid = stale.rsplit("-", 1)[1]
        # a live process's folder is another export's; ours was left by a killed run
        if not (pid.isdigit() and int(pid) not in (0, os.getpid()) and pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    return out


def export_project(db, out, link=False, verbose=True, shard_size=1024):
    """Write the project's grown data set to the new folder `out` (module docstring).

    Returns:
        dict: ``out``, ``positives`` / ``hard_negatives`` per category,
        ``background``, ``decisions``, ``round`` (the last ingested one).
    """
    from keras_fgvc.bootstrap.store import open_store
    from keras_fgvc.training import artifacts

    out = _check_out(out)
    tmp = f"{out}.tmp-{os.getpid()}"
    os.makedirs(tmp)
    try:
        with open_store(db) as store:
            summary = _write(store, tmp, link, shard_size)
            summary["db"] = _redacted(db)
            artifacts.write_json(os.path.join(tmp, "lineage.json"), summary["lineage"])
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["out"] = out
    if verbose:
        print(f"Exported to {out}: {sum(summary['positives'].values())} images in "
              f"{len(summary['positives'])} categories (round {summary['round']}), "
              f"{summary['background']} background, "
              f"{sum(summary['hard_negatives'].values())} hard negatives, "
              f"{summary['decisions']} decisions.", flush=True)
    return summary


def _write(store, tmp, link, shard_size):
    settings = store.settings()
    categories = store.categories()
    names = [c.name for c in categories]
    rounds = store.rounds()
    closed = [r["index"] for r in rounds if r["status"] == "closed"]
    last = max(closed, default=0)
    taken, files = {}, []
    groups = {"positive": store.members(last, "positive"),
              "background": store.members(last, "background"),
              "hard_negative": store.members(last, "hard_negative")}
    for kind, rows in groups.items():
        for image_id, path, index, _, joined in sorted(rows):
            category = None if index is None else names[index]
            folder = {"positive": ("rare", category), "background": (BACKGROUND,),
                      "hard_negative": ("hard_negatives", category)}[kind]
            target = _place(path, os.path.join(tmp, *folder), image_id, taken, link)
            files.append((os.path.relpath(target, tmp), path, image_id, kind, category or "",
                          joined))
    for category in categories:  # `init --seed_dir OUT` reads them back
        if category.definition and category.definition != category.name:
            folder = os.path.join(tmp, "rare", category.name)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, DEFINITION_FILES[0]), "w", encoding="utf-8") as f:
                f.write(category.definition + "\n")
    with open(os.path.join(tmp, "files.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "original_path", "image_id", "kind", "category", "round"])
        writer.writerows(files)
    decisions = 0
    with open(os.path.join(tmp, "decisions.jsonl"), "w", encoding="utf-8") as f:
        for row in store.iter_decisions():
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
            decisions += 1
    _write_records(tmp, files, names, shard_size)
    count = lambda kind: {n: sum(1 for r in files if r[3] == kind and r[4] == n) for n in names}
    summary = {"round": last, "positives": count("positive"),
               "hard_negatives": count("hard_negative"),
               "background": sum(1 for r in files if r[3] == "background"),
               "decisions": decisions}
    model = next((r for r in reversed(rounds) if r["index"] <= last and r["model_path"]), None)
    summary["lineage"] = {
        "exported_at": time.time(), "last_ingested_round": last,
        "open_rounds_left_out": [r["index"] for r in rounds if r["status"] != "closed"],
        "settings": settings, "rounds": [r["lineage"] for r in rounds if r["lineage"]],
        # the last ingested round's model: it chose that round's candidates, trained on
        # S_{i-1} / H_{i-1}; no model has been trained on the exported S_k yet
        "model": model["model_path"] if model else None,
        "model_round": model["index"] if model else None,
        "counts": {k: summary[k] for k in ("positives", "hard_negatives", "background",
                                           "decisions")}}
    return summary


def _write_records(tmp, files, names, shard_size):
    """S_k + background and H_k as TFRecords (`keras_fgvc.data.folder_records`)."""
    import numpy as np

    from keras_fgvc.data.folder_records import write_split_records
    from keras_fgvc.data.task import Split
    from keras_fgvc.training import artifacts

    label = {n: i + 1 for i, n in enumerate(names)}
    folder = os.path.join(tmp, "tfrecords")
    for prefix, kinds in (("train", ("positive", "background")),
                          ("hard_negatives", ("hard_negative",))):
        rows = [r for r in files if r[3] in kinds]
        if not rows:
            continue
        split = Split(labels=np.asarray([label.get(r[4], 0) for r in rows], np.int64),
                      paths=np.asarray([os.path.join(tmp, r[0]) for r in rows], dtype=object))
        write_split_records(split, folder, prefix, shard_size, verbose=0)
    artifacts.write_text(os.path.join(folder, "labels.txt"),
                         "".join(f"{n}\n" for n in [BACKGROUND, *names]))
