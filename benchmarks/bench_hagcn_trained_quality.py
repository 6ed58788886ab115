"""The trained HAGCN's quality against its closed form: one training configuration per run, started from a
fitted closed-form model (fitted once and cached, as ``--epochs N`` starts from the fit), evaluated on
queries and database (mAP@1000, mAP@all; labels only evaluate).

    python benchmarks/bench_hagcn_trained_quality.py --data fashion-mnist --bits 64 --epochs 3 \
        [--objective distill|neighbours] [--lr 1e-4] [--theta-lr 1e-3] [--freeze-theta] [--anchors-frozen-w] \
        --model runs/cache/fashion-mnist-s0-64.pt --jsonl runs/trained.jsonl --tag NAME

``--model``: the closed-form model file; fitted with the defaults on the training split and written there
when it does not exist. The objective's constants (``--tau``, ``--teacher-tau``, ``--balance``,
``--decorr``, ``--quant``, ``--knn``) override deephash.models.trained_projection's for the run.
``--w-frozen``: train R (and θ) only. One JSON line per run: the options, the epoch chosen by the
held-out objective, the held-out objective and training loss per epoch, mAP@1000 / mAP@all, train seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_hagcn_filters import load  # noqa: E402

from deephash.methods import get_method, load_model  # noqa: E402
from deephash.metrics import mean_average_precision  # noqa: E402
from deephash.models import trained_projection as tp  # noqa: E402
from deephash.training.data_parallel import ONE_PROCESS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--objective", default=tp.TRAIN_DEFAULTS["objective"], choices=tp.OBJECTIVES)
    p.add_argument("--lr", type=float, default=tp.TRAIN_DEFAULTS["lr"])
    p.add_argument("--theta-lr", type=float, default=tp.TRAIN_DEFAULTS["theta_lr"])
    p.add_argument("--batch-size", type=int, default=tp.TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--freeze-theta", action="store_true")
    p.add_argument("--w-frozen", action="store_true")
    p.add_argument("--tau", type=float, default=tp.TAU)
    p.add_argument("--teacher-tau", type=float, default=tp.TEACHER_TAU)
    p.add_argument("--quant", type=float, default=tp.QUANT_WEIGHT)
    p.add_argument("--balance", type=float, default=tp.BALANCE_WEIGHT)
    p.add_argument("--decorr", type=float, default=tp.DECORR_WEIGHT)
    p.add_argument("--knn", type=int, default=tp.TARGET_KNN)
    p.add_argument("--tag", default="")
    p.add_argument("--jsonl", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    tp.TAU, tp.TEACHER_TAU, tp.QUANT_WEIGHT = a.tau, a.teacher_tau, a.quant
    tp.BALANCE_WEIGHT, tp.DECORR_WEIGHT, tp.TARGET_KNN = a.balance, a.decorr, a.knn
    split = load(a.data, a.split_seed)
    if not os.path.exists(a.model):
        os.makedirs(os.path.dirname(a.model) or ".", exist_ok=True)
        get_method("hagcn", a.bits).fit(split.x_train).save(a.model)
    m = load_model(a.model)
    m.progress = True
    cfg = {**m.fitted, "epochs": a.epochs, "lr": a.lr, "theta_lr": a.theta_lr, "batch_size": a.batch_size,
           "freeze_theta": a.freeze_theta, "objective": a.objective}
    m.fitted = cfg

    def evaluate(model):
        qc, dc = model.encode(split.x_query), model.encode(split.x_db)
        return [mean_average_precision(qc, dc, split.y_query, split.y_db, k) for k in (1000, 0)]

    closed = evaluate(m) if a.epochs == 0 else None
    if a.w_frozen:
        init = tp.Encoder.__init__

        def frozen_w(self, *args, **kw):
            init(self, *args, **kw)
            self.W.requires_grad_(False)
        tp.Encoder.__init__ = frozen_w
    t0 = time.perf_counter()
    if a.epochs:
        m._train(torch.as_tensor(split.x_train), cfg, None, None, None, m.history, None, ONE_PROCESS, None)
    train_s = time.perf_counter() - t0
    r = closed or evaluate(m)
    rec = m.training or {"chosen": 0, "held_out": [], "loss": [], "g": [[]]}
    out = {"tag": a.tag, **{k: v for k, v in vars(a).items() if k not in ("tag", "jsonl")}, "chosen": rec["chosen"],
           "held_out": rec["held_out"], "loss": rec["loss"], "map1000": r[0], "map_all": r[1], "train_s": train_s,
           "g_after": rec["g"][rec["chosen"]]}
    print(json.dumps(out), flush=True)
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
