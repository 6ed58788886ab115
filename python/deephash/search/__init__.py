"""Search: the index of packed codes and everything that finds neighbours in it.

- :mod:`~deephash.search.index`: :class:`~deephash.search.index.Index` (``deephash.Index``), exact k-nearest
  search by Hamming distance, ``kind="flat"`` (a scan by ``hamming_topk``) or ``kind="mih"``.
- :mod:`~deephash.search.storage`: the index's rows in memory and on disk (segments, deletions, memory-mapped
  blocks); :mod:`~deephash.search.index_file`: the index file format (docs/formats.md).
- :mod:`~deephash.search.mih`: multi-index hashing tables (exact, sub-linear on structured codes).
- :mod:`~deephash.search.faiss_interop`: to and from FAISS binary indexes.
- :mod:`~deephash.search.sharding`: cutting an index into a shard folder with its manifest.
- :mod:`~deephash.search.distributed`: exact search over a shard folder on the ranks of a
  torch.distributed process group (:class:`~deephash.search.distributed.ShardedIndex`).

Nothing is imported here, so that importing one of them loads only what it needs.
"""
