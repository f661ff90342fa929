"""Cost of the sharpness-aware optimizers relative to Adam: seconds per epoch on BBBP, CPU.

One small message-passing model in plain torch, the same precollated BBBP batches of 32 for
every optimizer, the optimizers interleaved every few batches (so machine noise hits all alike),
median seconds per epoch reported as a ratio to Adam. GraphSAM's floor is (n+1)/n for n batches per
epoch: one extra forward/backward pass per epoch for the re-anchor.

Self-contained on purpose (the molsam data layer may not exist yet): featurizes with
molsam.chem.features and builds batches here.

    .venv/bin/python benchmarks/optim_overhead.py [--epochs 5] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rdkit import rdBase
from torch import nn

from molsam.chem.features import ATOM_VOCAB_SIZES, mol_to_graph, parse_smiles
from molsam.optim import build_optimizer, reanchor

DATA = Path("/work/shared/data/moleculenet/bbbp.csv")


def load_bbbp(path: Path) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(atom codes [n, 9], directed edges [2, 2m], label) per valid molecule."""
    out = []
    # BlockLogs: RDKit warns about every explicit H it keeps; silence it for this script only.
    with rdBase.BlockLogs(), path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            mol, _reason = parse_smiles(row["smiles"])
            if mol is None:
                continue
            graph = mol_to_graph(mol, rwse_steps=0)  # RWSE is not needed here
            edges = graph.bond_atoms.T
            edges = np.concatenate([edges, edges[::-1]], axis=1)
            out.append((graph.atom_codes.astype(np.int64), edges, float(row["p_np"])))
    return out


def collate(mols, batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """Fixed batches, built once: (atom codes, edge_index, graph id per atom, labels)."""
    offsets = torch.tensor(np.cumsum([0, *ATOM_VOCAB_SIZES[:-1]]), dtype=torch.long)
    batches = []
    for start in range(0, len(mols), batch_size):
        chunk = mols[start:start + batch_size]
        codes, edges, gid, base = [], [], [], 0
        for i, (c, e, _) in enumerate(chunk):
            codes.append(torch.from_numpy(c))
            edges.append(torch.from_numpy(np.ascontiguousarray(e)) + base)
            gid.append(torch.full((len(c),), i, dtype=torch.long))
            base += len(c)
        labels = torch.tensor([[y] for _, _, y in chunk])
        batches.append((torch.cat(codes) + offsets, torch.cat(edges, dim=1), torch.cat(gid),
                        labels))
    return batches


class SumMPNN(nn.Module):
    """Embedded atom codes, 3 sum-aggregation layers (index_add_), mean pool, linear head."""

    def __init__(self, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(sum(ATOM_VOCAB_SIZES), hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(self, codes, edge_index, gid, num_graphs: int) -> torch.Tensor:
        h = self.embed(codes).sum(dim=1)
        src, dst = edge_index
        for layer in self.layers:
            msg = torch.zeros_like(h).index_add_(0, dst, h[src])
            h = torch.relu(layer(h + msg))
        pooled = torch.zeros(num_graphs, h.shape[1]).index_add_(0, gid, h)
        counts = torch.bincount(gid, minlength=num_graphs).clamp(min=1).unsqueeze(1)
        return self.head(pooled / counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per optimizer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block", type=int, default=4, help="batches per interleaved block")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    mols = load_bbbp(DATA)
    batches = collate(mols, args.batch_size)
    n = len(batches)
    print(f"bbbp: {len(mols)} molecules, {n} batches of {args.batch_size} "
          f"(featurized + collated in {time.perf_counter() - t0:.1f} s), "
          f"{args.threads} threads, torch {torch.__version__}")

    total_steps = (args.epochs + 1) * n
    configs = {  # name -> (registry name, kwargs, re-anchor each epoch)
        "adam": ("adam", {}),
        "sam": ("sam", {"rho": 0.05}),
        "asam": ("asam", {}),
        "graphsam": ("graphsam", {"rho": 0.05, "beta": 0.99}),
        "samk(k=8)": ("samk", {"k": 8}),
        "sam-one": ("samk", {"k": 10**9}),
        "looksam(k=8)": ("looksam", {"k": 8, "alpha": 0.2}),
        "aesam": ("aesam", {"total_steps": total_steps}),
        "rst(p=0.5)": ("rst", {"p_start": 0.5}),
    }
    runs = {}
    for label, (name, kwargs) in configs.items():
        torch.manual_seed(0)
        model = SumMPNN()
        opt = build_optimizer(name, model.parameters(), lr=1e-3, **kwargs)
        runs[label] = {"model": model, "opt": opt, "times": [], "passes": 0, "loss": 0.0,
                       "calls": 0, "loss_sum": torch.zeros(())}
    loss_fn = nn.BCEWithLogitsLoss()

    def block(run: dict, first: int, last: int) -> float:
        """Train `run` on batches[first:last]; returns the seconds it took."""
        model, opt = run["model"], run["opt"]
        if first == 0:
            reanchor(opt)  # GraphSAM / SAM-One: exact perturbation at every epoch start
        start = time.perf_counter()
        for codes, edge_index, gid, labels in batches[first:last]:
            def closure(codes=codes, edge_index=edge_index, gid=gid, labels=labels):
                run["calls"] += 1
                loss = loss_fn(model(codes, edge_index, gid, labels.shape[0]), labels)
                loss.backward()
                return loss

            opt.zero_grad(set_to_none=True)  # torch Adam does not zero inside step
            run["loss_sum"] += opt.step(closure).detach()
        return time.perf_counter() - start

    def epochs(count: int, timed: bool) -> None:
        # Interleaved in blocks of a few batches: a burst of load from other processes on a
        # shared machine then hits every optimizer alike instead of one optimizer's epoch.
        for _ in range(count):
            spent = dict.fromkeys(runs, 0.0)
            for run in runs.values():
                run["calls"], run["loss_sum"] = 0, torch.zeros(())
            for first in range(0, n, args.block):
                for label, run in runs.items():
                    spent[label] += block(run, first, min(first + args.block, n))
            if timed:
                for label, run in runs.items():
                    run["times"].append(spent[label])
                    run["passes"] += run["calls"]
                    run["loss"] = run["loss_sum"].item() / n

    epochs(1, timed=False)  # warm-up epoch (allocator, first-call overheads)
    epochs(args.epochs, timed=True)

    adam = statistics.median(runs["adam"]["times"])
    adam_best = min(runs["adam"]["times"])
    print(f"\n{'optimizer':<14}{'passes/epoch':>13}{'s/epoch':>10}{'ratio':>8}"
          f"{'ratio(best)':>13}{'train loss':>12}")
    for label, run in runs.items():
        sec = statistics.median(run["times"])
        best = min(run["times"]) / adam_best
        print(f"{label:<14}{run['passes'] / args.epochs:>13.1f}{sec:>10.3f}{sec / adam:>8.3f}"
              f"{best:>13.3f}{run['loss']:>12.4f}")
    print(f"\nGraphSAM floor (n+1)/n = {(n + 1) / n:.4f} for n = {n}; SAM's is 2.0. "
          f"s/epoch and ratio: median of {args.epochs} epochs, optimizers interleaved every "
          f"{args.block} batches; ratio(best): fastest epoch over Adam's fastest; 'train loss': mean step loss of the last epoch (at the "
          "perturbed point for SAM-type steps).")


if __name__ == "__main__":
    main()
