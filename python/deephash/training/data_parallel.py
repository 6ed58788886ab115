"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on GPU): every rank takes a slice of
each global mini-batch.

Every rank holds the whole training set and draws the same batch order (from the seed); rank ``r`` runs
the network on its rows of each global batch (:meth:`DataParallel.rows`: contiguous, sizes differing by at
most one). Losses that compare items across the batch (pairwise similarities, HAGCN's per-batch graph)
see the whole global batch: the per-item outputs are gathered from every rank with a differentiable
all-gather (:meth:`DataParallel.gather`), so a run on R ranks computes the loss of a one-process run on the
union batch.

The gradient. Let the global loss be ``L = sum_r L_r``, where rank ``r`` computes its *share* ``L_r``: a
term computed identically on every rank from gathered outputs contributes ``term / R``
(:meth:`DataParallel.share`), a term over items contributes its sum over this rank's items divided by the
global count. Rank ``r`` backpropagates ``L_r``; the gather's backward sums, over ranks, the gradients
that reach each rank's rows (an all-reduce of the gathered gradient, of which each rank keeps its rows),
so after ``L_r.backward()`` rank ``r`` holds ``d L_r / d theta`` through its own paths plus the paths of
every rank's share through its rows. Summing those over ranks (:meth:`DataParallel.sync_gradients`, one
all-reduce with SUM, not an average) gives ``d L / d theta``: the one-process gradient on the union batch.
(DistributedDataParallel averages instead; with it, each rank would backpropagate ``R * L_r``.)

Every rank then takes the same optimiser step, so the ranks' models stay equal. Rank 0 alone reads and
writes checkpoints (:meth:`DataParallel.checkpoint`) and run files; the state it reads is broadcast, so
every rank resumes from the same epoch. A failure on rank 0 while it does something alone reaches every
rank as :class:`DataParallelError`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class DataParallelError(RuntimeError):
    """A step done on one rank failed; every rank raises it. ``local`` is True where the cause was seen
    on this rank alone (lost contact with the others)."""

    def __init__(self, message: str, local: bool = False):
        super().__init__(message)
        self.local = local


def split_sizes(n: int, world: int) -> list[int]:
    """Rows of a batch of ``n`` per rank: ``torch.tensor_split``'s sizes (the first ``n % world`` one more)."""
    base, extra = divmod(int(n), int(world))
    return [base + (r < extra) for r in range(int(world))]


class OneProcess:
    """The trivial group of one process: the interface of :class:`DataParallel` without collectives."""

    rank, world, is_main = 0, 1, True

    def rows(self, n: int) -> slice:
        return slice(0, int(n))

    def gather(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
        return t

    def share(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def total(self, loss: torch.Tensor) -> float:
        return float(loss.detach())

    def sync_gradients(self, params) -> None:
        pass

    def broadcast_module(self, module, buffers_only: bool = False) -> None:
        pass

    def broadcast_tensor(self, t):
        return t

    def on_main(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def checkpoint(self, checkpoint):
        return checkpoint


ONE_PROCESS = OneProcess()


class _GatherRows(torch.autograd.Function):
    """Rows of every rank, concatenated in rank order. Backward: the gathered gradient summed over ranks
    (each rank's loss share reaches every rank's rows), of which this rank keeps its own rows."""

    @staticmethod
    def forward(ctx, t, par, n):
        ctx.par = par
        sizes = split_sizes(n, par.world) if n is not None else par._sizes_of(t)
        if sizes[par.rank] != t.shape[0]:
            raise ValueError(f"rank {par.rank}: gather of {t.shape[0]} rows, expected {sizes[par.rank]}")
        ctx.sizes = sizes
        width = max(sizes)
        dev = t.device
        pad = torch.zeros((width - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=dev)
        local = par._to_comm(torch.cat([t, pad]).contiguous())
        parts = [torch.empty_like(local) for _ in range(par.world)]
        par._call(dist.all_gather, parts, local, group=par.group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(dev)

    @staticmethod
    def backward(ctx, grad):
        par, sizes = ctx.par, ctx.sizes
        g = par._to_comm(grad.contiguous().clone())
        par._call(dist.all_reduce, g, op=dist.ReduceOp.SUM, group=par.group)
        lo = sum(sizes[:par.rank])
        return g[lo:lo + sizes[par.rank]].to(grad.device), None, None


class DataParallel:
    """This process's rank in a data-parallel group (default: the initialised default process group).

    Collectives run on the CPU under gloo and on this rank's current GPU under NCCL; tensors elsewhere
    are moved for them. Build one after ``torch.distributed.init_process_group`` (``torchrun`` sets the
    environment it reads)."""

    def __init__(self, group=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise DataParallelError("data-parallel training needs an initialised torch.distributed process group "
                                    "(launch with torchrun, then torch.distributed.init_process_group)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.is_main = self.rank == 0
        self.src = dist.get_global_rank(group, 0) if group is not None else 0
        backend = dist.get_backend(group)
        self.device = (torch.device("cuda", torch.cuda.current_device()) if backend == "nccl"
                       else torch.device("cpu"))

    # -- collectives -------------------------------------------------------------------------
    def _to_comm(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.device == self.device else t.to(self.device)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (gloo and NCCL raise RuntimeError subclasses)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataParallelError(f"rank {self.rank}: lost contact with the other ranks ({first}): a rank "
                                    f"failed, hangs or has exited", local=True) from e

    def _sizes_of(self, t: torch.Tensor) -> list[int]:
        """Every rank's row count of ``t`` (an all-gather of one integer)."""
        mine = self._to_comm(torch.tensor([t.shape[0]], dtype=torch.int64))
        got = [torch.empty_like(mine) for _ in range(self.world)]
        self._call(dist.all_gather, got, mine, group=self.group)
        return [int(v) for v in got]

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n``."""
        sizes = split_sizes(n, self.world)
        lo = sum(sizes[:self.rank])
        return slice(lo, lo + sizes[self.rank])

    def gather(self, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Every rank's ``t`` concatenated in rank order; differentiable. ``n``: the global row count when
        each rank holds its :meth:`rows` of it (saves exchanging the sizes)."""
        return _GatherRows.apply(t, self, n)

    def share(self, loss: torch.Tensor) -> torch.Tensor:
        """This rank's share of a loss every rank computes identically from gathered outputs."""
        return loss / self.world

    def total(self, loss: torch.Tensor) -> float:
        """The global loss: the sum of every rank's share (for reporting; the same on every rank)."""
        v = self._to_comm(loss.detach().reshape(1).to(torch.float64))
        self._call(dist.all_reduce, v, op=dist.ReduceOp.SUM, group=self.group)
        return float(v)

    def sync_gradients(self, params) -> None:
        """Sum the gradients over ranks (one all-reduce of the flattened gradients)."""
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self._to_comm(torch.cat([g.reshape(-1) for g in grads]))
        self._call(dist.all_reduce, flat, op=dist.ReduceOp.SUM, group=self.group)
        at = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[at:at + n].view_as(g).to(p.device)
            at += n

    def broadcast_module(self, module: torch.nn.Module, buffers_only: bool = False) -> None:
        """Rank 0's parameters and buffers (or buffers only) on every rank."""
        tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        for t in tensors:
            if t.numel() == 0:
                continue
            c = self._to_comm(t.detach().clone())
            self._call(dist.broadcast, c, self.src, group=self.group)
            with torch.no_grad():
                t.copy_(c.to(t.device))

    def broadcast_tensor(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Rank 0's tensor (or None) on every rank; other ranks may pass anything."""
        meta = self._broadcast_object((t.dtype, tuple(t.shape)) if self.is_main and t is not None else None)
        if meta is None:
            return None
        dtype, shape = meta
        c = self._to_comm(t.contiguous()) if self.is_main else torch.empty(shape, dtype=dtype, device=self.device)
        self._call(dist.broadcast, c, self.src, group=self.group)
        return t if self.is_main else c.cpu()

    def _broadcast_object(self, obj):
        box = [obj if self.is_main else None]
        self._call(dist.broadcast_object_list, box, self.src, group=self.group,
                   device=self.device if self.device.type != "cpu" else None)
        return box[0]

    def on_main(self, fn, *args, **kwargs):
        """``fn(...)`` on rank 0, its result on every rank; its exception becomes every rank's
        :class:`DataParallelError` (rank 0 re-raises the original)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                error = e
        try:
            outcome = self._broadcast_object(
                (None if error is None else f"{type(error).__name__}: {error}", result if error is None else None))
        except DataParallelError:
            if error is not None:
                raise error  # noqa: B904
            raise
        if outcome[0] is not None:
            if error is not None:
                raise error
            raise DataParallelError(f"rank 0: {outcome[0]}")
        return outcome[1]

    def checkpoint(self, checkpoint):
        """``checkpoint`` read and written by rank 0 alone (see :class:`RankZeroCheckpoint`)."""
        return None if checkpoint is None else RankZeroCheckpoint(checkpoint, self)


class RankZeroCheckpoint:
    """A checkpoint (``restore`` / ``save``, :class:`deephash.training.run.Checkpoint`) that rank 0 alone reads and
    writes: the state it restores is broadcast (so every rank resumes from the same epoch, with no shared
    file system needed), and a failed save reaches every rank."""

    def __init__(self, inner, par: DataParallel):
        self.inner = inner
        self.par = par

    def restore(self, config: dict, seed: int, map_location="cpu"):
        return self.par.on_main(self.inner.restore, config, seed, map_location="cpu")

    def reading(self):
        """The inner checkpoint's :meth:`~deephash.training.run.Checkpoint.reading` (the state is the same on every
        rank, so a damaged one is refused on every rank alike)."""
        return self.inner.reading()

    def save(self, config: dict, seed: int, epoch: int, history: list, **state) -> None:
        on_epoch = getattr(self.inner, "on_epoch", None)
        if on_epoch is not None:  # every rank runs its own hook, after the save
            self.inner.on_epoch = None
        try:
            self.par.on_main(self.inner.save, config, seed, epoch, history, **state)
        finally:
            if on_epoch is not None:
                self.inner.on_epoch = on_epoch
        if on_epoch is not None:
            on_epoch(epoch)


def end_process_group(agreed: bool) -> None:
    """Destroy the default process group. When every rank ended the same way (``agreed``) they meet first:
    a rank whose peers had already torn their gloo transport down was seen to abort in its own teardown
    (SIGABRT, "terminate called without an active exception") while rank 0 was still writing its run
    files. A barrier that fails (a peer is gone) is ignored: the group is destroyed either way."""
    if agreed:
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - teardown: nothing left to report to
            pass
    dist.destroy_process_group()


def run_distributed(fn, cuda: bool = False, timeout: float = 1800.0):
    """``fn(DataParallel)`` in a process started by torchrun: initialises the default process group from
    its environment (NCCL with this rank's GPU ``LOCAL_RANK`` when ``cuda``, else gloo; ``timeout``
    seconds for every collective) unless one is initialised, and destroys what it initialised. An error
    every rank agreed on is raised on rank 0 alone; the other ranks return 2."""
    import datetime
    import os

    if not timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout}")
    if cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available")
    started = False
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
        started = True
    agreed = False  # every rank ends here the same way
    try:
        result = fn(DataParallel())
        agreed = True
        return result
    except DataParallelError as e:
        agreed = not e.local
        if e.local or dist.get_rank() == 0:
            raise
        return 2
    finally:
        if started:
            end_process_group(agreed)
