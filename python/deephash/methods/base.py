"""The small interface every hashing method of deephash shares, and the model file.

A method maps float embeddings ``[N, d]`` to ``bits``-bit codes: :meth:`fit` learns from training
embeddings (and, for supervised methods, the training labels), :meth:`encode` returns ±1 ``float32``
codes ``[N, bits]`` (pack them with :func:`deephash.codes.as_packed` or give them to
:class:`deephash.Index`), :meth:`save` / :meth:`load` keep the fitted state in one ``torch.save`` file.

Options of a method (epochs, learning rate, batch size, ...) are keyword arguments of its constructor
with defaults, listed in the class attribute ``options`` (a dict name -> default); :meth:`save` stores
them so that :meth:`load` rebuilds the same method.

Supervised methods set ``supervised = True``; their :meth:`fit` refuses ``y_train=None`` with a
``ValueError`` naming the method (:meth:`check_labels`). Labels are class ids ``[N]`` or multi-hot
``[N, C]``; two items are similar when they share a label (:func:`deephash.codes.relevance`).

Methods that train in epochs set ``resumable = True`` and take ``fit(..., checkpoint=...)``: an object
with ``restore(config, seed)`` (the state saved by the last finished epoch, or None) and
``save(config, seed, epoch, history, **state)`` (:class:`deephash.training.run.Checkpoint`), so that a killed run
resumes exactly where it stopped.

Methods that train by gradient steps on mini-batches set ``data_parallel = True`` and take
``fit(..., parallel=...)``: a :class:`deephash.training.data_parallel.DataParallel` over which they train
data-parallel (every rank calls ``fit`` with the same data; the fitted model is the same on every rank).

The model file (``model.pt``, docs/formats.md): a ``torch.save`` dict ``{"method", "bits", "seed",
"options", "state"}``. :meth:`HashMethod.load` also reads the older HAGCN files (``"format":
"deephash.HAGCN"``) through :func:`upgrade_old_model_file`.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

OLD_HAGCN_FORMAT = "deephash.HAGCN"  # model files of HAGCN before it was a HashMethod

# Every method by name (``deephash.methods.METHODS`` is this dict). :mod:`deephash.methods` fills it: the
# methods' modules import this one, so it cannot import them, and :meth:`HashMethod.load` finds a file's
# class here.
METHODS: dict[str, type[HashMethod]] = {}


def load_weights(path, map_location="cpu"):
    """``torch.load(weights_only=True)`` of a file deephash wrote (model, checkpoint): a pickled payload
    is refused, never run; torch's warnings about the file's pickle protocol are not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def describe_load_error(e: Exception) -> str:
    """What went wrong in :func:`load_weights`, in a few words."""
    if isinstance(e, pickle.UnpicklingError):
        return "it holds pickled objects other than tensors and plain data; refused without running them"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def upgrade_old_model_file(blob: dict) -> dict:
    """A model file of HAGCN before it was a method (``{"format": "deephash.HAGCN", "config", "state_dict"}``,
    the paper recipe marked ``config["seed_compatible"]``) in today's layout. Such files did not record the
    training seed; it reads as 0."""
    cfg = dict(blob["config"])
    cls = METHODS["hagcn-paper" if cfg.pop("seed_compatible", False) else "hagcn-net"]
    options = {k: cfg[k] for k in cls.tunables if k in cfg}
    return {"method": cls.name, "bits": cfg["bits"], "seed": 0, "options": {"filter": cfg["filter"], **options},
            "state": {"config": cfg, "net": blob["state_dict"]}}


class HashMethod:
    """Base class: subclasses set ``name`` and implement ``fit``, ``encode``, ``state_dict``, ``load_state_dict``."""

    name = "base"
    supervised = False
    resumable = False
    data_parallel = False
    options: dict = {}

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        if not 8 <= int(bits) <= 1024:
            raise ValueError(f"bits must be in 8..1024, got {bits}")
        self.bits = int(bits)
        self.seed = int(seed)
        unknown = sorted(set(kwargs) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(unknown)} (options: {known})")
        for key, default in self.options.items():
            setattr(self, key, kwargs.get(key, default))

    def get_options(self) -> dict:
        return {key: getattr(self, key) for key in self.options}

    @property
    def in_dim(self) -> int | None:
        """Input dimension once fitted (from the fitted mean), else None."""
        mean = getattr(self, "mean", None)
        return None if mean is None else int(mean.shape[0])

    @property
    def config(self) -> dict:
        """What identifies the model: method, bits, seed, input dimension and options."""
        return {"method": self.name, "bits": self.bits, "seed": self.seed, "in_dim": self.in_dim,
                **self.get_options()}

    @property
    def label(self) -> str:
        """How tables and plots name the method."""
        return self.name

    def check_labels(self, x_train, y_train) -> None:
        """Refuse missing or mismatched training labels for a supervised method."""
        if not self.supervised:
            return
        if y_train is None:
            raise ValueError(f"{self.name} is a supervised method: fit needs the training labels "
                             f"(y_train: class ids [N] or multi-hot [N, C]); got none")
        n = len(x_train)
        if len(y_train) != n:
            raise ValueError(f"{self.name}: y_train has {len(y_train)} rows, x_train has {n}")

    def fit(self, x_train, y_train=None) -> "HashMethod":
        raise NotImplementedError

    def encode(self, x) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def save(self, path) -> None:
        torch.save({"method": self.name, "bits": self.bits, "seed": self.seed, "options": self.get_options(),
                    "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path) -> "HashMethod":
        """The method in a model file (``RUN/model.pt``, or the run directory ``RUN``)."""
        p = Path(path)
        if p.is_dir():
            p = p / "model.pt"
        try:
            blob = load_weights(p)
        except Exception as e:  # noqa: BLE001 - any failure to read means "not a model file"
            raise ValueError(f"{p}: cannot read a deephash model ({describe_load_error(e)})") from e
        return cls.from_saved(blob, p)

    @classmethod
    def from_saved(cls, blob: dict, path) -> "HashMethod":
        """The method in a dict written by :meth:`save` and already read from ``path``."""
        if isinstance(blob, dict) and blob.get("format") == OLD_HAGCN_FORMAT:
            try:
                blob = upgrade_old_model_file(blob)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: a damaged HAGCN model file of the old format ({type(e).__name__}: {e})") from e
        if not isinstance(blob, dict) or "method" not in blob or "state" not in blob:
            raise ValueError(f"{path}: not a deephash model file")
        if blob["method"] == "hagcn" and isinstance(blob["state"], dict) and "net" in blob["state"]:
            blob = {**blob, "method": "hagcn-net"}  # written when the network was the default HAGCN (< 0.2)
        if cls.name != "base" and blob.get("method") != cls.name:
            raise ValueError(f"{path}: holds a {blob.get('method')!r} model, not {cls.name!r}")
        klass = cls
        if cls.name == "base":  # HashMethod.load: whichever method the file holds
            if blob.get("method") not in METHODS:
                raise ValueError(f"{path}: unknown method {blob.get('method')!r}")
            klass = METHODS[blob["method"]]
        for key in ("bits", "seed"):
            if not isinstance(blob.get(key), int) or isinstance(blob.get(key), bool):
                raise ValueError(f"{path}: not a deephash model file ({key!r} must be an integer, "
                                 f"got {blob.get(key)!r})")
        options = blob.get("options", {})
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise ValueError(f"{path}: not a deephash model file ('options' must be a dict of options)")
        # The device a model trained on is where it runs, not part of the model (as torch.load's
        # map_location): a model trained on a GPU still loads and encodes where there is none.
        device = options.get("device")
        if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"{path}: trained with device={device!r}; no CUDA here, so it runs on the CPU")
            options = {**options, "device": "cpu"}
        # A file of the right layout may still hold anything: whatever goes wrong rebuilding the method
        # from it, or encoding one row with it, is the file's fault.
        try:
            m = klass(blob["bits"], seed=blob["seed"], **options)
            m.load_state_dict(blob["state"])
            d = m.in_dim
            if d is None:
                raise ValueError("the model was never fitted")
            codes = m.encode(np.zeros((1, d), np.float32))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise ValueError(f"{path}: not a usable {klass.name} model file ({type(e).__name__}: {e})") from e
        if tuple(codes.shape) != (1, m.bits):
            raise ValueError(f"{path}: not a usable {klass.name} model file (its codes have shape "
                             f"{tuple(codes.shape)[1:]}, not [{m.bits}])")
        return m


class ProjectionMethod(HashMethod):
    """Codes ``sign((x - mean) @ proj)``: the fitted state of LSH, PCAH and ITQ."""

    def __init__(self, bits: int, seed: int = 0, **kwargs):
        super().__init__(bits, seed, **kwargs)
        self.mean = None
        self.proj = None

    def project(self, x) -> torch.Tensor:
        if self.proj is None:
            raise RuntimeError(f"{self.name}.encode before fit")
        return (as_float(x) - self.mean) @ self.proj

    def encode(self, x) -> torch.Tensor:
        return sign(self.project(x))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "proj": self.proj}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.proj = state["mean"], state["proj"]


def as_float(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)


def label_matrix(y, n_classes: int | None = None) -> torch.Tensor:
    """Multi-hot ``float32[N, C]`` from class ids ``[N]`` or multi-hot ``[N, C]``."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if t.dim() == 2:
        return (t > 0).to(torch.float32)
    if t.dim() != 1:
        raise ValueError(f"labels must be class ids [N] or multi-hot [N, C], got shape {tuple(t.shape)}")
    t = t.to(torch.int64)
    if (t < 0).any():
        raise ValueError("class ids must be non-negative")
    c = int(t.max()) + 1 if n_classes is None else int(n_classes)
    return torch.nn.functional.one_hot(t, c).to(torch.float32)


def pca(x: torch.Tensor, k: int):
    """Mean and the top-``k`` principal directions ``[d, k]`` (descending variance) of ``x``, in float64."""
    x = x.to(torch.float64)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(1, x.shape[0] - 1)
    vals, vecs = torch.linalg.eigh(cov)
    order = torch.argsort(vals, descending=True)[:k]
    return mean.to(torch.float32), vecs[:, order].to(torch.float32), vals[order].to(torch.float32)


def sign(z: torch.Tensor) -> torch.Tensor:
    """±1 codes, with 0 mapped to -1 (bit = value > 0, as ``pack_bits``)."""
    return torch.where(z > 0, 1.0, -1.0).to(torch.float32)
