"""The folder task as sharded TFRecords (``task_kwargs.records=DIR``): written once, then streamed.

Each split is written, in its order, to contiguous shards of `shard_size`
examples in the `keras_fgvc.data.tfrecords` format (the original file's
bytes, the label, the teacher label and, for soft background splitting, the
teacher's probabilities)::

    DIR/<split>-<key>/<split>-00000-of-00042.tfrecord

The key hashes every example's path, size, modification time, label and
teacher label / probabilities: another image list, an edited file, a new
teacher or seed writes a new folder (old ones are left for the user to
delete). Writing is resumable: each shard is written to a temporary file and
renamed when whole, so a shard that exists is complete and a killed run writes
only the shards still missing. Processes sharing DIR (the workers of a
multi-worker run) start at different shards (`keras_fgvc.data.cache.work_order`)
and skip those another has finished.

The training split is first put in a seeded random order (records hold it in
that order; the `Split` is reordered to match), because training reads the
shards through a bounded shuffle (`keras_fgvc.training.inputs`) that cannot
mix a folder listed class by class. Validation and test keep their order and
are read back in it, so predictions line up with ``split.paths``.
"""

import dataclasses
import hashlib
import os

import numpy as np

from keras_fgvc.data.cache import work_order
from keras_fgvc.data.tfrecords import shard_name, write_tfrecord_shard

DEFAULT_SHARD_SIZE = 1024


def records_key(split):
    """A 16-hex-digit hash of what the records of `split` hold (module docstring)."""
    digest = hashlib.sha256(b"keras_fgvc folder records v1\n")
    for path in split.paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\t-1\n".encode())
    digest.update(np.ascontiguousarray(split.labels, np.int64).tobytes())
    for extra in (split.teacher_labels, split.teacher_probabilities):
        digest.update(b"-" if extra is None else np.ascontiguousarray(extra).tobytes())
    return digest.hexdigest()[:16]


def write_split_records(split, folder, name, shard_size=DEFAULT_SHARD_SIZE, verbose=1):
    """Shard files holding `split` in order under `folder` (only the missing ones are written).

    Args:
        split: a file-based `Split`.
        folder: where the shards go (created).
        name: shard file prefix (the split's name).
        shard_size: examples per shard.
        verbose: 1 prints how many shards it writes.

    Returns:
        tuple of the shard files, in order.
    """
    if split.paths is None:
        raise ValueError("records: the split has no image files to write.")
    if shard_size < 1:
        raise ValueError(f"task_kwargs.records_shard_size must be >= 1, got {shard_size}.")
    num_shards = max(1, -(-len(split) // shard_size))
    files = [shard_name(os.path.join(folder, name), i, num_shards) for i in range(num_shards)]
    missing = [i for i, f in enumerate(files) if not os.path.exists(f)]
    if missing and verbose:
        print(f"Records: writing {len(missing)} of {num_shards} shards of {name} "
              f"({len(split)} images) -> {folder}", flush=True)
    for i in work_order(missing):
        if os.path.exists(files[i]):  # another worker finished it meanwhile
            continue
        rows = np.arange(i * shard_size, min((i + 1) * shard_size, len(split)))
        write_tfrecord_shard(split.subset(rows), files[i])
    return tuple(files)


def attach_records(task, records_dir, seed=0, shard_size=DEFAULT_SHARD_SIZE, verbose=1):
    """`task` whose splits carry `Split.records` under `records_dir` (written when missing).

    Call it last: the records hold the teacher labels the splits have now.
    The training split comes back in a seeded random order (module docstring).
    """
    if not records_dir:
        return task
    rng = np.random.default_rng([int(seed), 7])
    splits = {"train": task.train.subset(rng.permutation(len(task.train)))}
    splits.update(val=task.val, test=task.test)
    for name, split in splits.items():
        if not len(split):
            continue
        folder = os.path.join(os.fspath(records_dir), f"{name}-{records_key(split)}")
        files = write_split_records(split, folder, name, shard_size, verbose)
        splits[name] = dataclasses.replace(split, records=files)
    metadata = {**(task.metadata or {}), "records": os.path.abspath(records_dir)}
    return dataclasses.replace(task, metadata=metadata, **splits)
