"""Training throughput of CoMPT beside molsam's default GPS model, in the same run (graphs/s).

Both models train on BBBP's molecules with Adam at batch 32 through `molsam train`'s own step
(ReplicateTrainer._train_step: batches gathered on the device, one eager step each, no
validation): GPS as recipes/bbbp.yaml builds it (hidden 64 x 3) and CoMPT as
recipes/paper/compt-bbbp.yaml does (d 256 x 4 layers, GRU readout). `--rounds` timed epochs per
model, interleaved so machine noise hits both alike, after one untimed epoch; the median is
reported with the ratio, and the time a 150-epoch CoMPT run would take at that rate.
The GraphSAM paper reports CoMPT with Adam at 218 graphs/s on its GPU (Table 2).

    MOLSAM_DATA_DIR=/path/to/moleculenet/raw python benchmarks/compt_throughput.py --threads 2
    python benchmarks/compt_throughput.py --device cuda --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molsam.config import load_recipe, recipe_from_dict, recipe_to_dict
from molsam.data.splits import SplitIndices
from molsam.train.loop import ReplicateTrainer
from molsam.train.run import load_recipe_data

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"gps": ROOT / "recipes/bbbp.yaml", "compt": ROOT / "recipes/paper/compt-bbbp.yaml"}
PAPER_GRAPHS_PER_S = 218


def trainer_for(name: str, device: str, batch_size: int, out: Path) -> ReplicateTrainer:
    raw = recipe_to_dict(load_recipe(RECIPES[name]))
    raw["optim"] = {"name": "adam", "schedule": "constant", "lr": 1e-4}
    raw["train"].update({"batch_size": batch_size, "device": device, "seeds": [0]})
    recipe = recipe_from_dict(raw)
    store = load_recipe_data(recipe)
    everything = np.arange(len(store))
    split = SplitIndices(everything, everything[:0], everything[:0])
    return ReplicateTrainer(recipe, raw, store.batch_source(device), split,
                            task="classification", target_names=store.target_names, seed=0,
                            out_dir=out / name, device=torch.device(device))


def timed_epoch(trainer: ReplicateTrainer, rng: np.random.Generator, batch_size: int) -> float:
    """Seconds for one epoch of training steps over every molecule (one host sync at the end)."""
    order = rng.permutation(len(trainer.split.train))
    device_order = trainer.source.upload_order(order)
    trainer.model.train()
    started = time.perf_counter()
    total = torch.zeros((), device=trainer.device)
    for start in range(0, len(order), batch_size):
        batch = trainer.source.gather(order[start:start + batch_size],
                                      device_order[start:start + batch_size])
        total += trainer._train_step(batch, trainer.targets[batch.index])
    float(total)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: trainer_for(name, args.device, args.batch_size, Path(tmp))
                    for name in RECIPES}
        for trainer in trainers.values():
            timed_epoch(trainer, rng, args.batch_size)  # untimed: allocator, kernels
        seconds = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                seconds[name].append(timed_epoch(trainer, rng, args.batch_size))
    molecules = len(trainers["gps"].split.train)
    rate = {name: molecules / statistics.median(s) for name, s in seconds.items()}
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{molecules} molecules, median of {args.rounds} epochs")
    for name, value in rate.items():
        params = sum(p.numel() for p in trainers[name].model.parameters())
        print(f"  {name:6s} {value:9.1f} graphs/s  ({params:,} parameters)")
    print(f"  CoMPT / GPS: {rate['compt'] / rate['gps']:.3f}x; CoMPT / the paper's "
          f"{PAPER_GRAPHS_PER_S} graphs/s: {rate['compt'] / PAPER_GRAPHS_PER_S:.2f}x")
    train_part = int(0.8 * molecules)
    print(f"  150 CoMPT epochs on an 80% training part: "
          f"{150 * train_part / rate['compt'] / 60:.1f} min of training steps")


if __name__ == "__main__":
    main()
