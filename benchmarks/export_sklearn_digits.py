"""Write scikit-learn's bundled 8x8 digits (1,797 images, 64-d, pixels / 16) as ``x, y`` in an .npz, a
second small embedding set (no download) for checking that HAGCN's defaults are not fitted to Fashion-MNIST.

    python benchmarks/export_sklearn_digits.py runs/digits.npz   # needs scikit-learn
"""
import sys

import numpy as np
from sklearn.datasets import load_digits

d = load_digits()
np.savez(sys.argv[1], x=(d.data / 16.0).astype(np.float32), y=d.target.astype(np.int64))
print(f"wrote {sys.argv[1]}: {d.data.shape}")
