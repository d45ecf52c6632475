"""iNat-BG and Places-BG task construction (background-splitting appendix A).

A background task keeps N "rare" categories of a full label space and maps
every other category to the background label 0 (DESIGN.md: 0 = background,
1..N = rare). A setting is a list of `BackgroundSpec`s, one per model the
paper trains:

iNaturalist-BG (5,089 categories; 100 random test categories):

- N = 5089: one model, every category labelled (0% background);
- N = 1100: one model, the 100 test categories plus 1,000 random others;
- N = 100: one model over the 100 test categories;
- N = 10: 10 models, the 100 test categories split into 10 groups of 10;
- N = 1: 10 binary models for 10 of the test categories.

Places-BG (365 categories):

- N = 10: 5 models of 10 random categories each (50 distinct categories);
- N = 1: 10 binary models for 10 of those 50 categories.

Every random choice comes from one seeded stream in a fixed order, so the
N = 1 categories are always drawn from the same test categories (iNat) or the
same N = 10 categories (Places) for a given seed.
"""

import dataclasses

import numpy as np

from keras_fgvc.data.task import Split, Task

INAT2017_NUM_CATEGORIES = 5089
PLACES365_NUM_CATEGORIES = 365
INAT_BG_SETTINGS = (5089, 1100, 100, 10, 1)
PLACES_BG_SETTINGS = (10, 1)


@dataclasses.dataclass(frozen=True)
class BackgroundSpec:
    """One background model: the source categories it labels 1..N, in order.

    Args:
        name: e.g. ``"inat_bg_n10_m3"``.
        categories: source class indices; category ``categories[j]`` gets
            label ``j + 1``; every other category gets 0.
    """

    name: str
    categories: tuple

    def __post_init__(self):
        cats = tuple(int(c) for c in self.categories)
        if not cats:
            raise ValueError(f"{self.name}: a background spec needs at least one category.")
        if min(cats) < 0:
            raise ValueError(f"{self.name}: category {min(cats)} is negative.")
        if len(set(cats)) != len(cats):
            raise ValueError(f"{self.name}: categories repeat.")
        object.__setattr__(self, "categories", cats)

    @property
    def num_foreground(self):
        return len(self.categories)

    def relabel(self, labels, num_source_classes=None):
        """Maps source labels to 0 (background) / 1..N (works on NumPy arrays).

        Raises:
            ValueError: a negative label, or a label >= `num_source_classes`.
        """
        labels = np.asarray(labels, np.int64)
        if labels.size and labels.min() < 0:
            raise ValueError(f"{self.name}: source label {int(labels.min())} is negative.")
        if num_source_classes is not None and labels.size and labels.max() >= num_source_classes:
            raise ValueError(f"{self.name}: source label {int(labels.max())} is outside the "
                             f"class range [0, {num_source_classes - 1}].")
        size = max(int(labels.max(initial=-1)), max(self.categories)) + 1
        if num_source_classes is not None:
            size = max(size, num_source_classes)
        table = np.zeros(size, np.int64)
        table[list(self.categories)] = np.arange(1, len(self.categories) + 1)
        return table[labels]

    def background_fraction(self, class_counts):
        """Share of examples that are background under this spec, given source counts."""
        counts = np.asarray(class_counts, np.float64)
        total = counts.sum()
        return float(1.0 - counts[list(self.categories)].sum() / total) if total else 0.0


def mean_background_fraction(specs, class_counts):
    """The appendix's "on average" background fraction over a setting's models."""
    return float(np.mean([s.background_fraction(class_counts) for s in specs]))


def _check_sizes(num_categories, **sizes):
    for name, value in sizes.items():
        if not 1 <= value <= num_categories:
            raise ValueError(f"{name}={value} must be in [1, num_categories={num_categories}].")


def inat_bg_tasks(num_categories=INAT2017_NUM_CATEGORIES, n=100, num_test_categories=100,
                  num_train_categories=1100, num_models=10, seed=0):
    """The iNat-BG setting with N = `n` rare categories per model.

    Args:
        num_categories: size of the source label space (5089 for iNat 2017).
        n: N per model: `num_categories`, `num_train_categories`,
            `num_test_categories`, or a small group size (10 or 1 in the
            paper) for which `num_models` models are built.
        num_test_categories: the random test categories (100).
        num_train_categories: N of the large single model (1100).
        num_models: models of the small settings (10 for N = 10 and N = 1).
        seed: seed of every random choice.

    Returns:
        list of `BackgroundSpec`; categories sorted within each spec.

    Raises:
        ValueError: `n` is none of the settings, or sizes do not fit.

    Example:
        >>> specs = inat_bg_tasks(n=10)
        >>> len(specs), specs[0].num_foreground
        (10, 10)
    """
    _check_sizes(num_categories, num_test_categories=num_test_categories,
                 num_train_categories=num_train_categories)
    if num_train_categories < num_test_categories:
        raise ValueError(
            f"num_train_categories={num_train_categories} must include the "
            f"num_test_categories={num_test_categories} test categories."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_categories)
    test = order[:num_test_categories]
    extra = order[num_test_categories:num_train_categories]
    groups = rng.permutation(test)
    binary = rng.choice(test, size=min(num_models, num_test_categories), replace=False)
    sort = lambda a: tuple(int(c) for c in np.sort(a))
    if n == num_categories:
        return [BackgroundSpec(f"inat_bg_n{n}", tuple(range(num_categories)))]
    if n == num_train_categories:
        return [BackgroundSpec(f"inat_bg_n{n}", sort(np.concatenate([test, extra])))]
    if n == num_test_categories:
        return [BackgroundSpec(f"inat_bg_n{n}", sort(test))]
    if n == 1:
        return [BackgroundSpec(f"inat_bg_n1_m{m}", (int(c),)) for m, c in enumerate(binary)]
    if 1 < n < num_test_categories and n * num_models <= num_test_categories:
        return [BackgroundSpec(f"inat_bg_n{n}_m{m}", sort(groups[m * n:(m + 1) * n]))
                for m in range(num_models)]
    raise ValueError(
        f"iNat-BG has no setting N={n} (settings: {num_categories}, {num_train_categories}, "
        f"{num_test_categories}, or N*num_models <= {num_test_categories})."
    )


def places_bg_tasks(num_categories=PLACES365_NUM_CATEGORIES, n=10, group_size=10,
                    num_group_models=5, num_binary_models=10, seed=0):
    """The Places-BG setting with N = `n` (10: five models; 1: ten binary models).

    Args:
        num_categories: source label space (365).
        n: `group_size` (the N = 10 setting) or 1.
        group_size: N of the group setting (10).
        num_group_models: models of the group setting (5).
        num_binary_models: binary models, drawn from the group categories (10).
        seed: seed of every random choice.

    Returns:
        list of `BackgroundSpec`.

    Example:
        >>> [s.num_foreground for s in places_bg_tasks(n=1)][:3]
        [1, 1, 1]
    """
    _check_sizes(num_categories, group_categories=group_size * num_group_models)
    if num_binary_models > group_size * num_group_models:
        raise ValueError(
            f"num_binary_models={num_binary_models} exceeds the "
            f"{group_size * num_group_models} group categories."
        )
    rng = np.random.default_rng(seed)
    pool = rng.permutation(num_categories)[:group_size * num_group_models]
    binary = rng.choice(pool, size=num_binary_models, replace=False)
    if n == group_size:
        return [BackgroundSpec(f"places_bg_n{n}_m{m}",
                               tuple(int(c) for c in np.sort(pool[m * n:(m + 1) * n])))
                for m in range(num_group_models)]
    if n == 1:
        return [BackgroundSpec(f"places_bg_n1_m{m}", (int(c),)) for m, c in enumerate(binary)]
    raise ValueError(f"Places-BG has no setting N={n} (settings: {group_size}, 1).")


def _relabel_split(split, spec, num_source):
    return Split(labels=spec.relabel(split.labels, num_source), images=split.images,
                 paths=split.paths, teacher_labels=split.teacher_labels,
                 teacher_probabilities=split.teacher_probabilities)


def background_task(task, spec, name=None, require_positives=True):
    """Relabels a full-label-space `Task` into the background task of `spec`.

    Args:
        task: a `Task` without background whose labels are source categories.
        spec: a `BackgroundSpec`.
        name: task name (default ``spec.name``).
        require_positives: every rare category must have training examples.

    Returns:
        `Task` with ``class_names = ["background", <N category names>]`` and
        ``has_background=True``; its `summary()` reports the background fraction.

    Raises:
        ValueError: `spec` names a category outside the task's label space, or
            a rare category has no training example.

    Example:
        >>> bg = background_task(task, inat_bg_tasks(task.num_classes, n=100)[0])  # doctest: +SKIP
        >>> bg.background_fraction()  # doctest: +SKIP
        0.983
    """
    if task.has_background:
        raise ValueError(f"Task {task.name!r} already has a background class.")
    cats = np.asarray(spec.categories, np.int64)
    bad = cats[(cats < 0) | (cats >= task.num_classes)]
    if len(bad):
        raise ValueError(
            f"{spec.name}: category {int(bad[0])} is outside the class range "
            f"[0, {task.num_classes - 1}] of task {task.name!r}."
        )
    if len(np.unique(cats)) != len(cats):
        raise ValueError(f"{spec.name}: categories repeat.")
    splits = {s: _relabel_split(getattr(task, s), spec, task.num_classes)
              for s in ("train", "val", "test")}
    names = ["background"] + [task.class_names[c] for c in cats]
    if require_positives:
        counts = np.bincount(splits["train"].labels, minlength=len(names))
        empty = np.flatnonzero(counts[1:] == 0)
        if len(empty):
            c = int(cats[empty[0]])
            raise ValueError(
                f"{spec.name}: rare category {c} ({task.class_names[c]!r}) has no training "
                f"examples ({len(empty)} empty classes)."
            )
    return Task(name=name or spec.name, class_names=names, **splits,
                has_background=True, teacher_class_names=task.teacher_class_names)


def downsample_background(task, keep_fraction, seed=0):
    """Keeps every foreground training example and `keep_fraction` of the background.

    Background-splitting appendix F (Table 4: keep 100%, 25%, 5%, 1%).
    Only the training split changes; val and test keep their distribution.

    Args:
        task: a background `Task`.
        keep_fraction: share of background training images kept, in (0, 1];
            ``round(keep_fraction * n_background)`` images (at least 1) are
            drawn without replacement.
        seed: NumPy seed of that draw.

    Returns:
        a new `Task` named ``<name>_bg<percent>``; order of kept examples is
        the original order.

    Example:
        >>> small = downsample_background(task, 0.05)  # doctest: +SKIP
    """
    if not task.has_background:
        raise ValueError(f"Task {task.name!r} has no background class to downsample.")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
    labels = task.train.labels
    bg = np.flatnonzero(labels == 0)
    k = max(1, int(round(keep_fraction * len(bg)))) if len(bg) else 0
    kept_bg = np.random.default_rng(seed).choice(bg, size=k, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(labels != 0), kept_bg]))
    return dataclasses.replace(task, name=f"{task.name}_bg{100 * keep_fraction:g}",
                               train=task.train.subset(keep))
