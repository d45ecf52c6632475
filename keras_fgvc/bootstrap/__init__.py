"""keras_fgvc.bootstrap: grow a data set with humans in the loop (Cui et al., CVPR 2016).

Dissertation Ch. 2.2 / Sec. 2.4.3: from a seed set S_0 and a pool of
unlabelled candidates split into k subsets, each round trains on S_{i-1} and
the human hard negatives H_{i-1}, scores C_i, and asks people a yes / no
question about every confident candidate; accepted ones join S_i, rejected
ones join H_i. ``python -m keras_fgvc.bootstrap`` drives it (`__main__`).

Modules: `project` (init), `rounds` (train, score, open tasks), `scoring`,
`selection`, `export`, `experiment` (simulated projects, Table 2.3); the
database and the labelling page: `db`, `store`, `stats`, `web`, `simulate`.
Importing the package loads nothing heavy (no TensorFlow).
"""
