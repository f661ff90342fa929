"""CoMPT's factored bond keys against the explicit ones, same model, same batches, same run.

molsam.models.compt computes a layer's bond keys as (W_k W_e sqrt(d)) b_ij + const (a d x 13
matrix) whenever the edge embedding's dropout is off, and as W_k e_ij over embedded bonds
(a d x d product per bond) when it is on. This times training steps (Adam, batch 32, BBBP,
d 256 x 4 layers as recipes/paper/compt-bbbp.yaml) both ways, interleaved: the explicit path
is forced by setting the model's dropout_p above 0 while its Dropout modules keep p = 0, so
both paths compute the same function.

    MOLSAM_DATA_DIR=/path/to/moleculenet/raw python benchmarks/compt_bond_keys.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from molsam.data.pipeline import DataSpec, load_store
from molsam.models import CoMPTModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = load_store(DataSpec("bbbp", "smiles", ["p_np"], None, "classification"),
                       rwse_steps=0, extras=("compt",))
    source = store.batch_source()
    order = np.random.default_rng(0).permutation(len(store))
    batches = [source.gather(order[i:i + 32]) for i in range(0, 32 * args.batches, 32)]
    torch.manual_seed(0)
    model = CoMPTModel(1, hidden=256, layers=4, heads=4)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def epoch(explicit: bool) -> float:
        model.dropout_p = 0.5 if explicit else 0.0
        started = time.perf_counter()
        for batch in batches:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    epoch(False), epoch(True)  # untimed
    seconds = {False: [], True: []}
    for _ in range(args.rounds):
        for explicit in (False, True):
            seconds[explicit].append(epoch(explicit))
    factored, explicit = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"{args.batches} batches of 32, {args.threads} thread(s), median of {args.rounds}: "
          f"factored {factored:.2f} s, explicit {explicit:.2f} s, "
          f"speed-up {explicit / factored:.2f}x")


if __name__ == "__main__":
    main()
