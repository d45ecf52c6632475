"""The `Task` every data builder returns and every trainer consumes.

Label contract (DESIGN.md): for background tasks, label 0 is background and
1..N are the rare categories. Metrics are computed over 1..N only.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """One split of a task: labels plus either in-memory images or file paths.

    Args:
        labels: int64 [n] class indices into `Task.class_names`.
        images: uint8 [n, H, W, C] images held in memory, or None.
        paths: [n] image file paths (str), or None.
        teacher_labels: int64 [n] pseudo-labels from a teacher over
            `Task.teacher_class_names`; -1 marks "no teacher label".
        teacher_probabilities: float32 [n, K] teacher class probabilities
            (soft background splitting), or None.
        records: TFRecord shard files holding exactly these examples, in this
            order (`keras_fgvc.data.folder_records`), or None. The trainer then
            streams them instead of reading `paths`. `subset` drops them (a
            subset reads its files by path); a split changed any other way must
            drop them too (``dataclasses.replace(split, ..., records=None)``).
        hard_negative_for: int64 [n] or None: the class each example is a
            human-marked hard negative for (a false positive a labeler rejected
            for that class, dissertation Sec. 2.4.3); -1 = none. A hard negative
            with no class of its own has label -1 (metric learning: a negative
            for anchors of that class only); softmax baselines give it a class
            of its own (`keras_fgvc.data.bootstrap_manifest`).
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: np.ndarray | None = None
    teacher_labels: np.ndarray | None = None
    teacher_probabilities: np.ndarray | None = None
    records: tuple | None = None
    hard_negative_for: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}.")
        n = len(self.labels)
        if self.images is None and self.paths is None:
            raise ValueError("A split needs `images` or `paths`.")
        if self.paths is not None:
            self.paths = np.asarray(self.paths, dtype=object)
        for field in ("images", "paths", "teacher_labels", "teacher_probabilities",
                      "hard_negative_for"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"{field} has {len(value)} entries but labels has {n}.")
        if self.teacher_labels is not None:
            self.teacher_labels = np.asarray(self.teacher_labels, dtype=np.int64)
        if self.teacher_probabilities is not None:
            self.teacher_probabilities = np.asarray(self.teacher_probabilities, np.float32)
        if self.records is not None:
            self.records = tuple(str(f) for f in self.records)
        if self.hard_negative_for is not None:
            self.hard_negative_for = np.asarray(self.hard_negative_for, dtype=np.int64)
            unmarked = (self.labels < 0) & (self.hard_negative_for < 0)
            if unmarked.any():
                raise ValueError(f"example {int(np.flatnonzero(unmarked)[0])} has label -1 but "
                                 "is no hard negative (hard_negative_for -1).")

    @property
    def num_hard_negatives(self):
        """Examples marked as a hard negative of some class (0 without `hard_negative_for`)."""
        return 0 if self.hard_negative_for is None else int((self.hard_negative_for >= 0).sum())

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        """A new split holding the examples at `indices` (in that order), without `records`."""
        indices = np.asarray(indices, dtype=np.int64)
        take = lambda a: None if a is None else a[indices]
        return Split(
            labels=self.labels[indices],
            images=take(self.images),
            paths=take(self.paths),
            teacher_labels=take(self.teacher_labels),
            teacher_probabilities=take(self.teacher_probabilities),
            hard_negative_for=take(self.hard_negative_for),
        )


@dataclasses.dataclass
class Task:
    """A classification task: class names and train / val / test splits.

    Args:
        name: identifier, e.g. ``"fashion_bg"``.
        class_names: names of every class the model predicts. For a
            background task index 0 is ``"background"``.
        train, val, test: `Split`s.
        has_background: whether index 0 is the background class.
        teacher_class_names: label space of the teacher (background
            splitting), when the splits carry `teacher_labels`.
        metadata: free-form facts from the builder (e.g. NumPy source
            indices of each split); not updated by later subsampling.
        teacher_model: path of the saved teacher (a ``.keras`` file) whose
            pseudo-labels the splits carry, when the builder has it; the
            trainer starts the student's trunk from it with
            ``Config.init_trunk="teacher"`` (the background-splitting protocol).
    """

    name: str
    class_names: list
    train: Split
    val: Split
    test: Split
    has_background: bool = True
    teacher_class_names: list | None = None
    metadata: dict | None = None
    teacher_model: str | None = None

    def __post_init__(self):
        self.class_names = [str(c) for c in self.class_names]
        c = len(self.class_names)
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            # Label -1 is allowed only for hard negatives (`Split.__post_init__` checks that).
            lowest = -1 if split.hard_negative_for is not None else 0
            if len(split) and (split.labels.min() < lowest or split.labels.max() >= c):
                bad = split.labels[(split.labels < lowest) | (split.labels >= c)][0]
                raise ValueError(
                    f"Task {self.name!r}: {split_name} label {int(bad)} is outside "
                    f"the class range [0, {c - 1}]."
                )
            marks = split.hard_negative_for
            if marks is not None and len(marks) and marks.max() >= c:
                raise ValueError(f"Task {self.name!r}: {split_name} hard_negative_for "
                                 f"{int(marks.max())} is outside the class range [0, {c - 1}].")

    @property
    def num_classes(self):
        """Number of model outputs, background included."""
        return len(self.class_names)

    @property
    def num_foreground(self):
        """N, the number of rare (foreground) categories."""
        return self.num_classes - 1 if self.has_background else self.num_classes

    def class_counts(self, split="train"):
        """Examples per class in `split`, int64 [num_classes] (label -1 rows not counted)."""
        labels = getattr(self, split).labels
        return np.bincount(labels[labels >= 0], minlength=self.num_classes).astype(np.int64)

    def background_fraction(self, split="train"):
        """Fraction of `split` labelled background (0.0 for tasks without one)."""
        if not self.has_background:
            return 0.0
        labels = getattr(self, split).labels
        return float(np.mean(labels == 0)) if len(labels) else 0.0

    def summary(self):
        """A one-line description: sizes, classes and background fraction."""
        sizes = ", ".join(f"{s}={len(getattr(self, s))}" for s in ("train", "val", "test"))
        text = f"{self.name}: {self.num_classes} classes ({sizes})"
        if self.has_background:
            text += (
                f", N={self.num_foreground} rare, background "
                f"{100 * self.background_fraction():.2f}% of train"
            )
        return text
