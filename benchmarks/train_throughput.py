"""Training throughput (graphs/s): PyG GPSConv + DataLoader, molsam eager, molsam static shapes.

Implementations (`--modes`):
- `pyg`: what a PyG user writes: torch_geometric.data.Data per molecule (the same integer codes
  from the same GraphStore, bonds in both directions, RWSE), torch_geometric.loader.DataLoader
  (shuffled), GPSConv with GINEConv inside (same hidden, layers, heads), mean pooling, the same
  head, Adam. The baseline.
- `eager`: `molsam train`'s step (ReplicateTrainer, static_shapes false): batches gathered on the
  device, one eager step per batch.
- `static`: `train.static_shapes: true`: batches padded to bucketed shapes; on CUDA every shape's
  whole step is captured once as a CUDA graph and replayed ("captured" in the table), on the CPU
  the padded step runs eagerly ("padded"), on the CPU's finer bucket rules
  (molsam.data.buckets.Buckets.for_device).
- `static-cuda-set`: the static step with the CUDA bucket set on any device ("padded-cuda-set"
  on the CPU): what the coarse CUDA rounding would cost there.

Each configuration (mode x optimizer x precision x batch size) trains on all molecules of the
store as its training part, epoch by epoch exactly as `ReplicateTrainer.fit` does (re-anchor at
the epoch start, shuffled order uploaded once, one host sync at the epoch end; validation and
checkpoints left out). `--warmup-epochs` untimed epochs first (allocator, kernels, GraphSAM's
re-anchor, the warm-up and capture of every batch shape), then `--rounds` timed epochs,
interleaved across configurations so machine noise hits all alike; the median is reported.

    python benchmarks/train_throughput.py --store featurized/bbbp/store.pt --device cuda \\
        --hidden 256 --layers 4 --batch-sizes 32 128 512 --precisions fp32 bf16
    python benchmarks/train_throughput.py --data bbbp --device cpu --modes eager static \\
        --hidden 64 --layers 3 --batch-sizes 32 128 --optimizers graphsam --precisions fp32 \\
        --clock process

`--store` takes a featurized store (molsam featurize ... --out DIR writes DIR/store.pt), so a
machine without RDKit can run it; `--data` featurizes (or loads from molsam's cache) a CSV or
dataset name. `--json PATH` also writes the table as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from molsam.config import recipe_from_dict
from molsam.data.buckets import Buckets, size_sorted_order
from molsam.data.splits import SplitIndices
from molsam.data.store import GraphStore
from molsam.devices import deterministic_algorithms
from molsam.jsonio import write_json_atomic
from molsam.optim import reanchor
from molsam.train.loop import ReplicateTrainer

OPTIMIZERS = ("adam", "sam", "graphsam")
MODES = ("pyg", "eager", "static", "static-cuda-set")
PRECISIONS = ("fp32", "bf16")


# --------------------------------------------------------------------------------- molsam
class MolsamRunner:
    """A ReplicateTrainer with molecules `index` as its training part, stepped as `fit` does."""

    def __init__(self, store, source, optimizer, batch_size, precision, static, args, device,
                 out_dir, index, cuda_set=False):
        recipe_dict = {
            "data": {"path": str(args.store or args.data)},
            "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                      "pe_steps": int(store.rwse.shape[1])},
            "optim": {"name": optimizer},
            "train": {"batch_size": batch_size, "epochs": 1000, "device": device.type,
                      "precision": precision, "static_shapes": static,
                      "sort_by_size": args.sort_by_size},
        }
        recipe = recipe_from_dict(recipe_dict)
        split = SplitIndices(index, index[:0], index[:0])
        self.trainer = ReplicateTrainer(
            recipe, recipe_dict, source, split, task="classification",
            target_names=store.target_names, seed=0, out_dir=out_dir, device=device,
        )
        if cuda_set and self.trainer.static is not None:
            self.trainer.static.buckets = Buckets.for_batch_size(batch_size)
        self.epoch = 0

    def run_epoch(self) -> int:
        """One training epoch; returns the number of molecules trained on."""
        tr = self.trainer
        t, o = tr.recipe.train, tr.recipe.optim
        tr.model.train()
        if self.epoch % o.reanchor_every == 0:
            reanchor(tr.optimizer)
        self.epoch += 1
        order = tr.split.train[tr.rng.permutation(len(tr.split.train))]
        if t.sort_by_size:
            order = size_sorted_order(order, tr.source.atom_counts_host, t.batch_size, tr.rng)
        on_device = tr.source.upload_order(order)
        loss_sum = torch.zeros((), device=tr.device)
        for start in range(0, len(order), t.batch_size):
            index, idx = order[start : start + t.batch_size], on_device[start : start + t.batch_size]
            if tr.static is not None:
                loss_sum += tr.static.step(index, idx)
            else:
                batch = tr.source.gather(index, idx)
                loss_sum += tr._train_step(batch, tr.targets[batch.index])
        float(loss_sum)  # the epoch's one host sync, as in fit
        return len(order)

    def note(self) -> str:
        static = self.trainer.static
        if static is None:
            return ""
        if static.capture:
            total = static.replayed + static.eager
            return (f"{len(static.graphs)} graphs / {len(static.shapes_seen)} shapes, "
                    f"{static.replayed / max(total, 1):.0%} replayed")
        return f"{len(static.shapes_seen)} shapes"


# ------------------------------------------------------------------------------------ PyG
class PyGGPS(nn.Module):
    """GPSConv(GINEConv) stack on embedded integer codes, the usual PyG example shape."""

    def __init__(self, hidden: int, layers: int, heads: int, dropout: float, pe_steps: int,
                 tasks: int):
        super().__init__()
        from torch_geometric.nn import GINEConv, GPSConv

        from molsam.chem.spec import ATOM_VOCAB_SIZES, BOND_VOCAB_SIZES

        self.atom_emb = nn.ModuleList(nn.Embedding(n, hidden) for n in ATOM_VOCAB_SIZES)
        self.bond_emb = nn.ModuleList(nn.Embedding(n, hidden) for n in BOND_VOCAB_SIZES)
        self.pe = nn.Linear(pe_steps, hidden)
        self.convs = nn.ModuleList()
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.convs.append(GPSConv(hidden, GINEConv(mlp), heads=heads, dropout=dropout,
                                      norm="layer_norm"))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, tasks))

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
            y=torch.from_numpy(np.nan_to_num(store.y[g:g + 1]).astype(np.float32)),
        ))
    return out


class PyGRunner:
    def __init__(self, dataset, batch_size: int, precision: str, args, device):
        from torch_geometric.loader import DataLoader

        torch.manual_seed(0)
        self.device = device
        self.model = PyGGPS(args.hidden, args.layers, args.heads, 0.1, dataset[0].pe.shape[1],
                            dataset[0].y.shape[1]).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        self.autocast = precision == "bf16"
        self.size = len(dataset)

    def run_epoch(self) -> int:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        cast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
                else contextlib.nullcontext())
        for data in self.loader:
            data = data.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with cast:
                out = self.model(data)
            loss = nn.functional.binary_cross_entropy_with_logits(out.float(), data.y)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
        float(loss_sum)
        return self.size

    def note(self) -> str:
        return ""


# ----------------------------------------------------------------------------------- main
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load(args) -> GraphStore:
    if args.store:
        return GraphStore.load(args.store)
    from molsam.data.pipeline import DataSpec, load_store  # featurizes: needs RDKit

    return load_store(DataSpec(args.data, task="classification"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source_args = parser.add_mutually_exclusive_group(required=True)
    source_args.add_argument("--store", help="a featurized store file (store.pt)")
    source_args.add_argument("--data", help="CSV file or dataset name (featurized here)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on the CPU (molsam trains with 1)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["pyg", "eager", "static"], choices=MODES)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--molecules", type=int, default=None,
                        help="use the first N molecules of the store (default: all)")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--sort-by-size", action="store_true")
    parser.add_argument("--deterministic", action="store_true",
                        help="train.deterministic: deterministic kernels (measures their cost)")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: this process's CPU time (CPU device only), steadier than "
                             "wall time on a machine shared with other jobs")
    parser.add_argument("--json", help="also write the table to this JSON file")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.clock == "process" and device.type != "cpu":
        parser.error("--clock process measures CPU time: only with --device cpu")
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    store = load(args)
    store_size = len(store) if not args.molecules else min(args.molecules, len(store))
    index = np.arange(store_size, dtype=np.int64)
    source = store.batch_source(device)
    dataset = None
    if "pyg" in args.modes:
        try:
            dataset = pyg_dataset(store)[:store_size]
        except ImportError as exc:
            print(f"PyG baseline skipped: {exc}")
    tmp = tempfile.TemporaryDirectory()
    static_label = "captured" if device.type == "cuda" else "padded"

    def build(b: int) -> list:
        """The configurations of one batch size: (mode label, optimizer, precision, b, runner)."""
        configs = []
        for precision in args.precisions:
            if dataset is not None:
                configs.append(("pyg", "adam", precision, b,
                                PyGRunner(dataset, b, precision, args, device)))
            for mode in ("eager", "static", "static-cuda-set"):
                if mode not in args.modes:
                    continue
                for name in args.optimizers:
                    runner = MolsamRunner(store, source, name, b, precision, mode != "eager",
                                          args, device,
                                          Path(tmp.name) / f"{mode}-{name}-{precision}-{b}",
                                          index, cuda_set=mode == "static-cuda-set")
                    label = {"eager": "eager", "static": static_label,
                             "static-cuda-set": f"{static_label}-cuda-set"}[mode]
                    configs.append((label, name, precision, b, runner))
        return configs

    # One batch size at a time (rounds interleaved within it), its models and captured graphs
    # freed before the next: all of them at once could exceed the GPU's memory.
    context = deterministic_algorithms(True) if args.deterministic else contextlib.nullcontext()
    rate: dict[tuple, float] = {}
    #: Per round, eager epoch time / this configuration's (same round, so same machine noise).
    round_ratios: dict[tuple, list[float]] = {}
    notes: dict[tuple, str] = {}
    order: list[tuple] = []
    with context:
        for b in args.batch_sizes:
            configs = build(b)
            times: dict[int, list[float]] = {i: [] for i in range(len(configs))}
            graphs: dict[int, int] = {}
            for *_, runner in configs:  # warm-up: allocator, kernels, re-anchor, captures
                for _ in range(args.warmup_epochs):
                    runner.run_epoch()
            sync(device)
            for _ in range(args.rounds):
                for i, (*_, runner) in enumerate(configs):
                    sync(device)
                    start = clock()
                    graphs[i] = runner.run_epoch()
                    sync(device)
                    times[i].append(clock() - start)
            for i, (label, opt, precision, _, runner) in enumerate(configs):
                key = (label, opt, precision, b)
                rate[key] = graphs[i] / statistics.median(times[i])
                notes[key] = runner.note()
                order.append(key)
                eager_i = [j for j, c in enumerate(configs) if c[:3] == ("eager", opt, precision)]
                if eager_i and label.startswith(static_label):
                    round_ratios[key] = [e / t for e, t in zip(times[eager_i[0]], times[i])]
            del configs, runner
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"{store_size} molecules, device {device} ({name}), torch {torch.__version__}, "
          f"threads {threads}, hidden {args.hidden} x {args.layers} layers, heads {args.heads}, "
          f"deterministic {args.deterministic}, sort_by_size {args.sort_by_size}, median of "
          f"{args.rounds} interleaved epochs after {args.warmup_epochs} warm-up epochs, "
          f"{args.clock} time")
    print(f"{'implementation':<18}{'optimizer':<10}{'precision':<10}{'batch':>6}"
          f"{'graphs/s':>11}{'vs PyG':>9}{'vs eager':>10}  note")
    rows = []
    for label, opt, precision, b in order:
        r = rate[label, opt, precision, b]
        note = notes[label, opt, precision, b]
        pyg = rate.get(("pyg", "adam", precision, b))
        eager = rate.get(("eager", opt, precision, b))
        vs_pyg = f"{r / pyg:8.2f}x" if pyg and label != "pyg" else f"{'-':>9}"
        is_static = label.startswith(static_label)
        vs_eager = f"{r / eager:9.2f}x" if eager and is_static else f"{'-':>10}"
        ratios = round_ratios.get((label, opt, precision, b))
        if ratios:
            note = (f"per round {min(ratios):.2f}-{max(ratios):.2f}x"
                    + (f", {note}" if note else ""))
        print(f"{label:<18}{opt:<10}{precision:<10}{b:>6}{r:>11.0f}{vs_pyg}{vs_eager}  {note}")
        rows.append({"implementation": label, "optimizer": opt, "precision": precision,
                     "batch": b, "graphs_per_s": r, "vs_pyg": r / pyg if pyg else None,
                     "vs_eager": r / eager if eager and is_static else None,
                     "vs_eager_per_round": ratios, "note": note})
    for label in ("eager", static_label):
        for precision in args.precisions:
            for b in args.batch_sizes:
                adam = rate.get((label, "adam", precision, b))
                for opt in ("graphsam", "sam"):
                    other = rate.get((label, opt, precision, b))
                    if adam and other:
                        print(f"{label} {precision} batch {b}: {opt}/adam time per step "
                              f"{adam / other:.3f}")
    if args.json:
        write_json_atomic(args.json, {"device": name, "args": vars(args), "rows": rows})
    tmp.cleanup()


if __name__ == "__main__":
    main()
