"""Training: what runs around a method's ``fit``.

- :mod:`~deephash.training.run`: a training run and its directory (config, model, metrics, PR curve),
  :class:`~deephash.training.run.Checkpoint` for resuming, :func:`~deephash.training.run.train_and_evaluate`.
- :mod:`~deephash.training.data_parallel`: data-parallel training over torch.distributed (``torchrun``).
- :mod:`~deephash.training.progress`: the progress bar of training loops.
- :mod:`~deephash.training.demo`: ``deephash demo``: HAGCN against LSH (and ITQ), end to end, with a report.

Nothing is imported here: the methods import ``data_parallel`` and ``progress``, and ``run`` imports the
methods, so importing ``run`` from this ``__init__`` would make a cycle.
"""
