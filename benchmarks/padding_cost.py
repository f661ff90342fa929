"""Where the padded (static-shape) training step gains or loses time against the eager step.

For each batch size and `--sort-by-size` setting, one shuffled epoch order is cut into batches,
and every batch is trained on by three trainers built alike (same recipe, seed and weights):
`eager` (train.static_shapes false), `padded` (true: the device's bucket rules, on the CPU
molsam.data.buckets.Buckets.for_cpu) and `padded-cuda-set` (the CUDA bucket set on this
device). The steps are interleaved batch by batch, in a rotating order, so the machine's noise
hits the three alike; each step's time includes building its batch (gather, padding).

Printed per configuration: the padding volume against the eager batches (atoms, directed
edges, dense attention slots G x L and attention pairs G x L^2), the number of shapes, the time
per step and the same-run ratio eager time / this time over all steps, with its spread over
`--chunks` consecutive runs of steps (min-max of the per-chunk ratios). With `--profile`,
the share of the step spent in attention (scaled_dot_product_attention forward + backward).

    python benchmarks/padding_cost.py --store featurized/bbbp/store.pt --batch-sizes 32 128 \\
        --sort-by-size both --steps 48 --clock process --profile

The model is recipes/bbbp.yaml's (hidden 64 x 3 layers, 4 heads, dropout 0.1, GraphSAM) unless
told otherwise. `--clock process` times this process's CPU time: steadier than wall time on a
machine shared with other jobs (one torch thread).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molsam.config import recipe_from_dict
from molsam.data.buckets import (
    Buckets,
    attention_groups,
    padding_atom_counts,
    size_sorted_order,
)
from molsam.data.splits import SplitIndices
from molsam.data.store import GraphStore
from molsam.optim import reanchor
from molsam.train.loop import ReplicateTrainer

CONFIGS = ("eager", "padded", "padded-cuda-set")


def make_trainer(store, source, args, batch_size: int, config: str, out: Path, train_index):
    recipe_dict = {
        "data": {"path": str(args.store)},
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads,
                  "dropout": args.dropout, "pe_steps": int(store.rwse.shape[1])},
        "optim": {"name": args.optimizer},
        "train": {"batch_size": batch_size, "epochs": 1000, "device": "cpu", "precision": "fp32",
                  "static_shapes": config != "eager"},
    }
    split = SplitIndices(train_index, train_index[:0], train_index[:0])
    trainer = ReplicateTrainer(
        recipe_from_dict(recipe_dict), recipe_dict, source, split, task="classification",
        target_names=store.target_names, seed=0, out_dir=out, device=torch.device("cpu"))
    if config == "padded-cuda-set":
        trainer.static.buckets = Buckets.for_batch_size(batch_size)
    reanchor(trainer.optimizer)
    return trainer


def step(trainer, index: np.ndarray, on_device: torch.Tensor) -> None:
    if trainer.static is not None:
        trainer.static.step(index, on_device)
    else:
        batch = trainer.source.gather(index, on_device)
        trainer._train_step(batch, trainer.targets[batch.index])


def volume(trainer, batches) -> np.ndarray:
    """Summed (atoms, directed edges, attention slots, attention pairs) over `batches`; a
    grouped attention layout counts sum_g B_g L_g slots and sum_g B_g L_g^2 pairs."""
    counts, bonds = trainer.source.atom_counts_host, trainer.source.bond_counts_host
    total = np.zeros(4)
    for index in batches:
        a, b = counts[index], bonds[index]
        if trainer.static is None:
            n, e, groups = a.sum(), 2 * b.sum(), [(len(index), a.max())]
        else:
            buckets = trainer.static.buckets
            shape = buckets.shape(a, b)
            n, e, groups = shape.atoms, shape.edges, [(shape.graphs, shape.length)]
            if buckets.group_attention:
                every = np.concatenate([a, padding_atom_counts(len(index), shape, a)])
                groups = attention_groups(every, shape.length, buckets.length_multiple)[1]
        total += [n, e, sum(g * length for g, length in groups),
                  sum(g * length**2 for g, length in groups)]
    return total


def attention_share(trainer, batches, on_device) -> float:
    """Fraction of the profiled steps' CPU time spent in scaled_dot_product_attention (forward
    and backward kernels)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for index, idx in zip(batches, on_device):
            step(trainer, index, idx)
    events = prof.key_averages()
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    total = sum(e.self_cpu_time_total for e in events)
    return attention / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a featurized store file (store.pt)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--sort-by-size", choices=("off", "on", "both"), default="off")
    parser.add_argument("--steps", type=int, default=48, help="timed steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=4, help="runs of steps for the spread")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--optimizer", default="graphsam")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a few steps: the attention kernels' share")
    args = parser.parse_args()

    torch.set_num_threads(1)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    store = GraphStore.load(args.store)
    source = store.batch_source("cpu")
    everything = np.arange(len(store), dtype=np.int64)
    sorts = {"off": [False], "on": [True], "both": [False, True]}[args.sort_by_size]
    tmp = tempfile.TemporaryDirectory()
    print(f"{len(store)} molecules, torch {torch.__version__}, 1 thread, hidden {args.hidden} x "
          f"{args.layers} layers, {args.heads} heads, dropout {args.dropout}, {args.optimizer}, "
          f"{args.steps} steps interleaved per configuration, {args.clock} time")
    print(f"{'config':<16}{'batch':>6}{'sorted':>7}{'atoms':>7}{'edges':>7}{'slots':>7}"
          f"{'pairs':>7}{'shapes':>7}{'ms/step':>9}{'vs eager':>9}  spread  attention")
    for b in args.batch_sizes:
        for sort in sorts:
            rng = np.random.default_rng(0)
            order = everything[rng.permutation(len(everything))]
            if sort:
                order = size_sorted_order(order, source.atom_counts_host, b, rng)
            full = [order[i : i + b] for i in range(0, len(order) - b + 1, b)]
            need = args.warmup_steps + args.steps
            batches = [full[i % len(full)] for i in range(need)]
            on_device = [torch.from_numpy(i) for i in batches]
            trainers = {c: make_trainer(store, source, args, b, c, Path(tmp.name) / f"{c}{b}{sort}",
                                        everything) for c in CONFIGS}
            times = {c: [] for c in CONFIGS}
            for k, (index, idx) in enumerate(zip(batches, on_device)):
                rotation = CONFIGS[k % 3:] + CONFIGS[: k % 3]
                for c in rotation:
                    start = clock()
                    step(trainers[c], index, idx)
                    if k >= args.warmup_steps:
                        times[c].append(clock() - start)
            timed = batches[args.warmup_steps:]
            base = volume(trainers["eager"], timed)
            eager = np.array(times["eager"])
            for c in CONFIGS:
                t = np.array(times[c])
                chunks = np.array_split(np.arange(len(t)), args.chunks)
                ratios = [eager[ch].sum() / t[ch].sum() for ch in chunks]
                vol = volume(trainers[c], timed) / base
                static = trainers[c].static
                shapes = len(static.shapes_seen) if static is not None else len(
                    {(len(i), int(source.atom_counts_host[i].sum()),
                      int(source.bond_counts_host[i].sum()),
                      int(source.atom_counts_host[i].max())) for i in batches})
                share = ""
                if args.profile:
                    w = args.warmup_steps
                    share = attention_share(trainers[c], timed[:8], on_device[w : w + 8])
                    share = f"{share:.0%}"
                print(f"{c:<16}{b:>6}{'yes' if sort else 'no':>7}" + "".join(
                    f"{v:>7.2f}" for v in vol) + f"{shapes:>7}{1e3 * t.mean():>9.1f}"
                    f"{eager.sum() / t.sum():>8.2f}x  {min(ratios):.2f}-{max(ratios):.2f}  {share}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
