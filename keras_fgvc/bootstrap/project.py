"""`init`: a bootstrapping project from a seed folder and a pool folder (Sec. 2.2.2).

The seed set S_0 uses the image-folder layout of "your own images"::

    SEED/rare/<category>/...     S_0: the images of each category (any depth)
    SEED/background/...          optional: images of none of the categories

A category's definition, shown to labelers next to its exemplars, is the text
of ``SEED/rare/<category>/DEFINITION.txt`` (else ``README.txt``), else its
name. The candidate pool C is any folder of images at any depth (the file
extensions of `keras_fgvc.data.folder_task`); it is split into k subsets
C_1..C_k at random (seeded by ``--seed``: the same folders give the same
subsets), one per round. An optional ``--truth`` CSV (``path,label``; label a
category name or ``none``, paths absolute or relative to the CSV) records the
known label of some images: `simulate` answers from it, and round tasks can
mix in known items (``gold_share``) to measure each labeler's accuracy.

A file that cannot be decoded is skipped and reported, never fatal. Errors:
a seed folder the folder task's layout rules refuse
(`keras_fgvc.data.folder_task.read_layout`: no ``rare/`` folder, no category
in it, a category folder without images, images loose in ``rare/``, a
category named ``background``), a reserved category name, a category with
fewer than 2 readable images (a round holds one out for validation and the
triplet loss needs a pair), an empty pool, a pool holding seed images (the
same files, or a pool folder that contains the seed folder or lies inside
it).
"""

import csv
import os
import time

import numpy as np

DEFINITION_FILES = ("DEFINITION.txt", "README.txt")
MIN_SEED_IMAGES = 2


def default_workdir(db):
    """Where rounds write (a folder beside a SQLite file); None for a server database."""
    path = db[len("sqlite:///"):] if db.startswith("sqlite:///") else db
    if "://" in path:
        return None
    return os.path.splitext(os.path.abspath(path))[0] + ".rounds"


def _definition(folder, name):
    for file in DEFINITION_FILES:
        path = os.path.join(folder, file)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
            if text:
                return text
    return name


def read_seed(seed_dir):
    """``({category: (definition, [paths])}, [background paths])`` of a seed folder.

    The layout's rules and messages are the folder task's
    (`keras_fgvc.data.folder_task.read_layout`; the background is optional
    here); category names the softmax baselines reserve are refused.
    """
    from keras_fgvc.data.bootstrap_manifest import HARD_NEGATIVE_CLASS
    from keras_fgvc.data.folder_task import BACKGROUND, read_layout

    parts = read_layout(seed_dir, f"seed_dir {seed_dir}", background_required=False)
    background = parts.pop(BACKGROUND)
    reserved = [n for n in parts if n.split(":")[0] == HARD_NEGATIVE_CLASS]
    if reserved:
        raise ValueError(f"the category name {reserved[0]!r} is reserved for the hard-negative "
                         "classes of the softmax baselines; rename "
                         f"{os.path.join(seed_dir, 'rare', reserved[0])}.")
    categories = {name: (_definition(os.path.join(seed_dir, "rare", name), name), paths)
                  for name, paths in parts.items()}
    return categories, background


def _file_id(path):
    """(device, inode): the same file under two names (a link) has the same id."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def read_truth(path, known_paths, categories):
    """``({absolute path: label}, report)`` from a ``path,label`` CSV.

    Labels that are not a category name count as ``none``; rows naming a file
    outside the project are left out. Both are counted in the report.
    """
    from keras_fgvc.data.splits import require_path

    require_path(path, "truth CSV")
    base = os.path.dirname(os.path.abspath(path))
    truth, unknown_paths, renamed = {}, 0, 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if "path" not in fields or "label" not in fields:
            raise ValueError(f"truth CSV {path}: the first line must name the columns "
                             f"path,label; it has {fields}.")
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            file, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not file or not label:
                raise ValueError(f"truth CSV {path}, line {line}: empty path or label.")
            full = os.path.normpath(os.path.join(base, file))
            if full not in known_paths:
                unknown_paths += 1
                continue
            if label not in categories and label != "none":
                label, renamed = "none", renamed + 1
            truth[full] = label
    if not truth:
        raise ValueError(f"truth CSV {path}: none of its paths is a seed or pool image "
                         "(paths are absolute or relative to the CSV's folder).")
    return truth, {"rows": len(truth), "not_in_project": unknown_paths,
                   "other_labels_as_none": renamed}


def split_pool(paths, k, seed):
    """{path: subset 1..k}: a seeded permutation of the sorted paths cut into k near-equal parts."""
    paths = sorted(paths)
    order = np.random.default_rng([int(seed), 2016]).permutation(len(paths))
    subsets = {}
    for index, part in enumerate(np.array_split(order, k), start=1):
        for i in part:
            subsets[paths[i]] = index
    return subsets


def init_project(db, seed_dir, pool_dir, rounds, config="bootstrap_triplet_a_hn", truth=None,
                 workdir=None, image_size=None, channels=None, verbose=True, **settings):
    """Create the project in `db` (module docstring); returns a summary dict.

    Args:
        db: SQLite file, ``sqlite:///...`` or ``postgresql://...``.
        seed_dir, pool_dir: the two folders.
        rounds: k, the number of rounds (pool subsets).
        config: the training config of every round (`list_configs()`).
        truth: optional ``path,label`` CSV.
        workdir: where rounds train (default: ``<db without .db>.rounds``;
            required for a server database).
        image_size, channels: recorded; every round trains with them
            (``--set image_size=... --set channels=...``), default the config's.
        **settings: threshold, uniform_share, probe_share, gold_share, overlap,
            lease_seconds, seed, shard_size (see `keras_fgvc.bootstrap.store`).

    Raises:
        ValueError / FileNotFoundError: with a message naming what is wrong.
    """
    from keras_fgvc.bootstrap.store import open_store
    from keras_fgvc.data.folder_task import find_unreadable, walk_images
    from keras_fgvc.data.splits import require_path
    from keras_fgvc.training.experiments import get_config

    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
    training = get_config(config)  # unknown name: a ValueError listing the registered ones
    if training.task != "bootstrap":  # checked here: a project's config cannot change later
        raise ValueError(f"config {config!r} trains task {training.task!r}; a bootstrapping "
                         "project needs a config of task 'bootstrap' (e.g. "
                         "bootstrap_triplet_a_hn, bootstrap_softmax_hns).")
    channels = channels or training.channels
    seed_dir = os.path.abspath(require_path(seed_dir, "seed_dir"))
    pool_dir = os.path.abspath(require_path(pool_dir, "pool_dir"))
    workdir = os.path.abspath(workdir) if workdir else default_workdir(db)
    if workdir is None:
        raise ValueError(f"--workdir is needed for a server database ({db}): the folder where "
                         "each round trains and keeps its model.")
    if _inside(pool_dir, seed_dir) or _inside(seed_dir, pool_dir):
        raise ValueError(f"the pool {pool_dir} and the seed set {seed_dir} overlap (one folder "
                         "holds the other); keep the seed images outside the pool.")
    categories, background = read_seed(seed_dir)
    pool = walk_images(pool_dir)
    seed_files = {_file_id(p) for _, paths in categories.values() for p in paths}
    seed_files.update(_file_id(p) for p in background)
    shared = [p for p in pool if _file_id(p) in seed_files]
    if shared:
        raise ValueError(f"{len(shared)} pool image(s) are seed images (e.g. {shared[0]}); "
                         "a candidate must not already be in S_0.")
    everything = [p for _, paths in categories.values() for p in paths] + background + pool
    unreadable = set(find_unreadable(everything, channels))
    skipped = sorted(everything[i] for i in unreadable)
    bad = set(skipped)
    for name, (definition, paths) in categories.items():
        kept = [p for p in paths if p not in bad]
        if len(kept) < MIN_SEED_IMAGES:
            raise ValueError(f"category {name!r} has {len(kept) or 'no'} readable image"
                             f"{'' if len(kept) == 1 else 's'} in "
                             f"{os.path.join(seed_dir, 'rare', name)}; a round needs at least "
                             f"{MIN_SEED_IMAGES} (a pair for the triplet loss, one held out "
                             "for validation).")
        categories[name] = (definition, kept)
    background = [p for p in background if p not in bad]
    pool = [p for p in pool if p not in bad]
    if not pool:
        raise ValueError(f"the pool {pool_dir} holds no readable image.")
    labels = {}
    truth_report = None
    if truth:
        labels, truth_report = read_truth(truth, set(everything) - bad, set(categories))
    if settings.get("gold_share") and not any(labels.get(p) for p in pool):
        raise ValueError("gold_share > 0 mixes known items into the queue: pass --truth with "
                         "the known labels of some pool images.")
    values = {"seed_dir": seed_dir, "pool_dir": pool_dir, "rounds": rounds, "config": config,
              "workdir": workdir, "truth": os.path.abspath(truth) if truth else None,
              "image_size": image_size, "channels": channels, **settings}
    store = open_store(db, create=True)
    try:
        _write_project(store, values, categories, background, pool, labels)
    finally:
        store.close()
    os.makedirs(workdir, exist_ok=True)
    summary = {"categories": {n: len(p) for n, (_, p) in categories.items()},
               "background": len(background), "pool": len(pool),
               "subsets": _subset_sizes(pool, rounds, values.get("seed", 0)),
               "skipped": skipped, "truth": truth_report, "workdir": workdir}
    if verbose:
        print(describe(summary), flush=True)
    return summary


def _subset_sizes(pool, rounds, seed):
    counts = np.bincount(list(split_pool(pool, rounds, seed).values()), minlength=rounds + 1)
    return counts[1:].tolist()


def _write_project(store, values, categories, background, pool, labels):
    """Settings, categories, images and S_0 (each step idempotent: a killed init reruns)."""
    try:
        existing = store.settings()
    except ValueError:
        existing = None
    if existing is None:
        store.init_project({**values, "created_at": time.time()})
    else:
        keys = ("seed_dir", "pool_dir", "rounds", "config", "seed")
        changed = [k for k in keys if existing.get(k) != values.get(k, existing.get(k))]
        if changed or store.rounds():
            raise ValueError("this bootstrapping project is already initialised "
                             f"({existing['seed_dir']} + {existing['pool_dir']}, "
                             f"{existing['rounds']} rounds); use another --db.")
    created = store.add_categories([(n, d) for n, (d, _) in categories.items()])
    by_name = {c.name: c.id for c in created}
    subsets = split_pool(pool, values["rounds"], values.get("seed", 0))
    seed_rows = [(p, n) for n, (_, paths) in categories.items() for p in paths]
    store.add_images([{"path": p, "origin": "seed", "subset": None, "truth": labels.get(p)}
                      for p, _ in seed_rows]
                     + [{"path": p, "origin": "seed", "subset": None, "truth": labels.get(p)}
                        for p in background]
                     + [{"path": p, "origin": "pool", "subset": subsets[p],
                         "truth": labels.get(p)} for p in pool])
    ids = store.image_ids([p for p, _ in seed_rows] + background)
    store.add_members([(ids[p], by_name[n], "positive", 0) for p, n in seed_rows]
                      + [(ids[p], None, "background", 0) for p in background])


def describe(summary):
    """The lines `init` prints: S_0 per category, background, pool subsets, skips, truth."""
    lines = [f"Seed set S_0: {sum(summary['categories'].values())} images in "
             f"{len(summary['categories'])} categories"]
    width = max(len(n) for n in summary["categories"])
    lines += [f"  {name:<{width}}  {n:>6}" for name, n in summary["categories"].items()]
    lines.append(f"Background: {summary['background']} images")
    lines.append(f"Pool: {summary['pool']} images in {len(summary['subsets'])} subsets "
                 f"({', '.join(map(str, summary['subsets']))})")
    skipped = summary["skipped"]
    lines.append(f"Skipped (unreadable): {len(skipped)}" + (f" (first: {skipped[0]})"
                                                           if skipped else ""))
    if summary["truth"]:
        t = summary["truth"]
        lines.append(f"Truth: {t['rows']} labels ({t['not_in_project']} rows outside the "
                     f"project left out, {t['other_labels_as_none']} other labels as 'none')")
    lines.append(f"Rounds train in {summary['workdir']}")
    return "\n".join(lines)
