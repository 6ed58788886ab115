"""Index file size under append saves (issue 26, item 3): a 200,000-row 64-bit index (3.2 MB), then 3,000
cycles of remove(one id); save() to the file it came from, then 100 saves with nothing changed. Prints the
sizes and the time of the 3,000 cycles. Runs against whichever deephash is on the path (the old layout's
``deephash.index`` too)."""
import os
import tempfile
import time

import torch

import deephash_ext as de
try:
    from deephash.search.index import Index
except ImportError:
    from deephash.index import Index
g = torch.Generator().manual_seed(0)
d = tempfile.mkdtemp()
p = os.path.join(d, "g.idx")
Index(64).add(de.pack_bits(torch.randint(0, 2, (200_000, 64), generator=g))).save(p)
print("start", os.path.getsize(p))
idx = Index.load(p)
t = time.perf_counter()
peak = 0
for r in range(3000):
    idx.remove([r]); idx.save(p); peak = max(peak, os.path.getsize(p))
print("after 3000 remove/save", os.path.getsize(p), "peak", peak, f"{time.perf_counter() - t:.1f} s")
s0 = os.path.getsize(p)
for _ in range(100):
    idx.save(p)
print("100 no-op saves grew it by", os.path.getsize(p) - s0)
