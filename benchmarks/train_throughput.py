"""Training throughput (graphs/s) on BBBP: molsam (adam, sam, graphsam) against plain PyG.

molsam's path is exactly what `molsam train` runs inside an epoch: a ReplicateTrainer built from a
recipe (molsam.config.recipe_from_dict), batches from the store's BatchSource.gather, and the
trainer's own `_train_step` (closure, autocast policy, optimizer.step, Noam scheduler), with the
epoch-start rho/re-anchor calls of `ReplicateTrainer.fit`. Validation, checkpoints and metrics.csv
are left out (they are per epoch, not per step).

The baseline is what a PyG user writes: torch_geometric.data.Data per molecule (the same integer
atom/bond codes from the same GraphStore, bonds in both directions, RWSE), the
torch_geometric.loader.DataLoader (shuffled), GPSConv with GINEConv inside (same hidden, layers,
heads, dropout), mean pooling, the same head, Adam.

Timing: every configuration gets one untimed warm-up pass, then `--rounds` timed passes of
`--steps` training steps, rounds interleaved across configurations (machine noise hits all
alike); the median round is reported.

    .venv/bin/python benchmarks/train_throughput.py [--device cpu] [--threads 1] \
        [--hidden 64 --layers 3] [--batch-sizes 32 128] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from molsam.config import recipe_from_dict
from molsam.data.pipeline import DataSpec, load_store
from molsam.data.splits import SplitIndices
from molsam.optim import reanchor
from molsam.optim.schedules import rho_at, set_rho
from molsam.train.loop import ReplicateTrainer

OPTIMIZERS = ("adam", "sam", "graphsam")


# --------------------------------------------------------------------------------- molsam
class MolsamRunner:
    """A ReplicateTrainer on all of BBBP as its training part, stepped as `fit` steps it."""

    def __init__(self, store, source, optimizer: str, batch_size: int, args, device, out_dir):
        recipe_dict = {
            "data": {"path": args.data, "target_columns": ["p_np"]},
            "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads},
            "optim": {"name": optimizer},
            "train": {"batch_size": batch_size, "epochs": 30, "device": device.type,
                      "precision": args.precision},
        }
        recipe = recipe_from_dict(recipe_dict)
        everything = np.arange(len(store), dtype=np.int64)
        split = SplitIndices(everything, everything[:0], everything[:0])
        self.trainer = ReplicateTrainer(
            recipe, recipe_dict, source, split, task="classification",
            target_names=store.target_names, seed=0, out_dir=out_dir, device=device,
        )
        self.batch_size = batch_size
        self.epoch = 0
        self.order = np.empty(0, dtype=np.int64)

    def run(self, steps: int) -> None:
        t, o, tr = self.trainer.recipe.train, self.trainer.recipe.optim, self.trainer
        tr.model.train()
        loss_sum = torch.zeros((), device=tr.device)
        for _ in range(steps):
            if len(self.order) == 0:  # epoch boundary, as in ReplicateTrainer.fit
                set_rho(tr.optimizer, rho_at(self.epoch, o.rho, o.gamma, o.rho_every))
                if self.epoch % o.reanchor_every == 0:
                    reanchor(tr.optimizer)
                self.order = tr.split.train[tr.rng.permutation(len(tr.split.train))]
                self.epoch += 1
            index, self.order = self.order[: t.batch_size], self.order[t.batch_size:]
            batch = tr.source.gather(index)
            loss_sum += tr._train_step(batch, tr.targets[batch.index])
        float(loss_sum)  # one host sync per timed pass, as fit does at epoch end


# ------------------------------------------------------------------------------------ PyG
class PyGGPS(nn.Module):
    """GPSConv(GINEConv) stack on embedded integer codes, the usual PyG example shape."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, pe_steps: int):
        super().__init__()
        from torch_geometric.nn import GINEConv, GPSConv

        from molsam.chem.features import ATOM_VOCAB_SIZES, BOND_VOCAB_SIZES

        self.atom_emb = nn.ModuleList(nn.Embedding(n, hidden) for n in ATOM_VOCAB_SIZES)
        self.bond_emb = nn.ModuleList(nn.Embedding(n, hidden) for n in BOND_VOCAB_SIZES)
        self.pe = nn.Linear(pe_steps, hidden)
        self.convs = nn.ModuleList()
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.convs.append(GPSConv(hidden, GINEConv(mlp), heads=heads, dropout=dropout,
                                      norm="layer_norm"))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 1))

    def forward(self, data):
        from torch_geometric.nn import global_mean_pool

        x = sum(emb(data.x[:, i]) for i, emb in enumerate(self.atom_emb)) + self.pe(data.pe)
        e = sum(emb(data.edge_attr[:, i]) for i, emb in enumerate(self.bond_emb))
        for conv in self.convs:
            x = conv(x, data.edge_index, data.batch, edge_attr=e)
        return self.head(global_mean_pool(x, data.batch))


def pyg_dataset(store) -> list:
    from torch_geometric.data import Data

    a_ptr, b_ptr = store.atom_ptr, store.bond_ptr
    out = []
    for g in range(len(store)):
        a0, a1, b0, b1 = a_ptr[g], a_ptr[g + 1], b_ptr[g], b_ptr[g + 1]
        ends = torch.from_numpy(store.bond_atoms[b0:b1].astype(np.int64)).t()
        codes = torch.from_numpy(store.bond_codes[b0:b1].astype(np.int64))
        out.append(Data(
            x=torch.from_numpy(store.atom_codes[a0:a1].astype(np.int64)),
            pe=torch.from_numpy(store.rwse[a0:a1].astype(np.float32)),
            edge_index=torch.cat([ends, ends.flip(0)], dim=1),
            edge_attr=torch.cat([codes, codes], dim=0),
            y=torch.from_numpy(store.y[g:g + 1].astype(np.float32)),
        ))
    return out


class PyGRunner:
    def __init__(self, dataset, batch_size: int, args, device):
        from torch_geometric.loader import DataLoader

        torch.manual_seed(0)
        self.device = device
        self.model = PyGGPS(args.hidden, args.layers, args.heads, 0.1,
                            dataset[0].pe.shape[1]).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        self.iterator = iter(self.loader)

    def run(self, steps: int) -> None:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for _ in range(steps):
            try:
                data = next(self.iterator)
            except StopIteration:
                self.iterator = iter(self.loader)
                data = next(self.iterator)
            data = data.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            out = self.model(data)
            loss = nn.functional.binary_cross_entropy_with_logits(out, data.y)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
        float(loss_sum)


# ----------------------------------------------------------------------------------- main
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="bbbp",
                        help="CSV file or dataset name (MOLSAM_DATA_DIR for local copies)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads on the CPU (default: torch's default)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed round (default: about 1000 graphs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pyg", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    store = load_store(DataSpec(args.data, target_columns=["p_np"], task="classification"))
    source = store.batch_source(device)
    dataset = None if args.no_pyg else pyg_dataset(store)
    tmp = tempfile.TemporaryDirectory()

    configs = []  # (implementation, optimizer, batch, runner, steps)
    for b in args.batch_sizes:
        steps = args.steps or max(4, math.ceil(1000 / b))
        if dataset is not None:
            configs.append(("pyg", "adam", b, PyGRunner(dataset, b, args, device), steps))
        for name in args.optimizers:
            configs.append(("molsam", name, b,
                            MolsamRunner(store, source, name, b, args, device,
                                         Path(tmp.name) / f"{name}-{b}"), steps))

    for *_, runner, steps in configs:  # warm-up: allocator, kernels, first re-anchor
        runner.run(steps)
    sync(device)
    times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for _ in range(args.rounds):
        for i, (*_, runner, steps) in enumerate(configs):
            sync(device)
            start = time.perf_counter()
            runner.run(steps)
            sync(device)
            times[i].append(time.perf_counter() - start)

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    autocast = next((r.trainer.autocast_dtype for _, _, _, r, _ in configs
                     if isinstance(r, MolsamRunner)), None)
    print(f"BBBP ({len(store)} molecules), device {device}, torch threads {threads}, "
          f"hidden {args.hidden}, layers {args.layers}, heads {args.heads}, "
          f"molsam autocast {autocast or 'off (fp32)'}, PyG fp32, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'implementation':<15}{'optimizer':<10}{'batch':>6}{'steps':>7}{'graphs/s':>11}"
          f"{'vs PyG':>9}")
    rate: dict[tuple[str, str, int], float] = {}
    for i, (impl, name, b, _, steps) in enumerate(configs):
        rate[impl, name, b] = steps * b / statistics.median(times[i])
    for impl, name, b, _, steps in configs:
        base = rate.get(("pyg", "adam", b))
        ratio = f"{rate[impl, name, b] / base:8.2f}x" if base else f"{'-':>9}"
        print(f"{impl:<15}{name:<10}{b:>6}{steps:>7}{rate[impl, name, b]:>11.0f}{ratio}")
    for b in args.batch_sizes:
        adam = rate.get(("molsam", "adam", b))
        for name in ("graphsam", "sam"):
            if adam and ("molsam", name, b) in rate:
                print(f"batch {b}: {name}/adam time ratio {adam / rate['molsam', name, b]:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
