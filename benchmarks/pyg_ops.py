"""Would torch-geometric's ops make molsam's training step faster? Same outputs, step time.

Swaps one op family of molsam.models.gps at a time for its PyG counterpart and times a training
step (forward, backward, Adam) on BBBP batches against molsam's own ops, in the same run:

    gine      GINELayer's index_select + index_add_   ->  torch_geometric.nn.GINEConv(mlp), eps 0
    scatter   sum/mean readout by index_add_          ->  torch_geometric.utils.scatter
    dense     attention layout by one index_copy_     ->  torch_geometric.utils.to_dense_batch
              (layout built once per forward)             (max_num_nodes, batch_size: no sync;
                                                          recomputed in every layer)

Each variant first checks that its outputs equal molsam's (max |difference| printed; the model
is not changed by a swap, only the op). Timing: `--rounds` rounds of `--steps` steps, variants
interleaved within each round (noise hits all alike), median per variant, ratio to molsam's ops.

    nice -n 10 .venv/bin/python benchmarks/pyg_ops.py [--molecules 512] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from molsam.data.pipeline import DataSpec, load_store
from molsam.models import gps
from molsam.models.gps import DenseSelfAttention, GINELayer, GPSModel

DATA = "/work/shared/data/moleculenet/bbbp.csv"


# ------------------------------------------------------------------------- PyG replacements
def gine_forward(self, x, edge_index, edge_attr):
    from torch_geometric.nn import GINEConv

    conv = self.__dict__.get("_pyg_conv")
    if conv is None:
        # GINEConv shares self.mlp, but its constructor re-initializes it: keep the weights.
        weights = {k: v.clone() for k, v in self.mlp.state_dict().items()}
        conv = GINEConv(self.mlp, eps=0.0, train_eps=False)
        self.mlp.load_state_dict(weights)
        object.__setattr__(self, "_pyg_conv", conv)  # not a submodule: no second parameter list
    return conv(x, edge_index, edge_attr)


def pyg_readout(self, x, batch, layout=None):
    from torch_geometric.utils import scatter

    if self.pooling == "attention":
        return ORIGINAL["readout"](self, x, batch, layout)
    return scatter(x, batch.node_graph, dim=0, dim_size=batch.num_graphs, reduce=self.pooling)


def attention_forward_to_dense_batch(self, x, flat, valid):
    from torch_geometric.utils import to_dense_batch

    b, length = valid.shape
    hidden = x.shape[-1]
    graph = torch.div(flat, length, rounding_mode="floor")
    qkv, _ = to_dense_batch(self.qkv(x), graph, max_num_nodes=length, batch_size=b)
    q, k, v = qkv.view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
    rows = attended.transpose(1, 2).reshape(b * length, hidden).index_select(0, flat)
    return self.out(rows)


ORIGINAL = {"gine": GINELayer.forward, "readout": GPSModel.readout,
            "dense": DenseSelfAttention.forward}
VARIANTS = {
    "molsam": {},
    "gine": {(GINELayer, "forward"): gine_forward},
    "scatter": {(GPSModel, "readout"): pyg_readout},
    "dense": {(DenseSelfAttention, "forward"): attention_forward_to_dense_batch},
}


def use(variant: str) -> None:
    GINELayer.forward = ORIGINAL["gine"]
    GPSModel.readout = ORIGINAL["readout"]
    DenseSelfAttention.forward = ORIGINAL["dense"]
    for (cls, name), fn in VARIANTS[variant].items():
        setattr(cls, name, fn)


# ------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--molecules", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--pooling", default="mean", choices=gps.POOLINGS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    store = load_store(DataSpec(args.data, target_columns=("p_np",)), rwse_steps=16, workers=1)
    source = store.batch_source("cpu")
    order = np.random.default_rng(0).permutation(min(args.molecules, len(store)))
    batches = [source.gather(order[i : i + args.batch_size])
               for i in range(0, len(order), args.batch_size)]
    torch.manual_seed(0)
    model = GPSModel(1, hidden=args.hidden, layers=args.layers, pooling=args.pooling, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    model.eval()
    with torch.no_grad():
        use("molsam")
        reference = [model(b) for b in batches[:4]]
        for variant in VARIANTS:
            use(variant)
            diff = max(float((model(b) - r).abs().max()) for b, r in zip(batches[:4], reference))
            print(f"{variant:8s} max |output - molsam's| = {diff:.2e}")
    model.train()

    def steps(count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            batch = batches[i % len(batches)]
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(batch), batch.y.nan_to_num())
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - started) / count

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for variant in VARIANTS:  # warm-up
        use(variant)
        steps(3)
    for _ in range(args.rounds):
        for variant in VARIANTS:
            use(variant)
            times[variant].append(steps(args.steps))
    use("molsam")
    base = statistics.median(times["molsam"])
    print(f"CPU train step (Adam), batch {args.batch_size}, hidden {args.hidden} x "
          f"{args.layers} layers, {args.pooling} pooling, {args.threads} thread(s), "
          f"median of {args.rounds} rounds x {args.steps} steps:")
    for variant, values in times.items():
        median = statistics.median(values)
        print(f"  {variant:8s} {1e3 * median:7.2f} ms/step  {median / base:5.3f}x molsam's ops")


if __name__ == "__main__":
    main()
