"""A drug-like benchmark set with HIV-like sizes, built from files already on disk.

    python benchmarks/library.py OUT.csv [--large 300]

Rows: the SMILES of the shared MoleculeNet CSVs (bbbp, clintox, esol, lipo, sider, tox21), then
RDKit's own NCI sample (rdkit/Data/NCI/first_5K.smi), then `--large` seeded peptides of 15-35
residues (~100-250 heavy atoms, rings from Phe/Tyr/Trp/His/Pro): about 23,400 rows, mean ~25
heavy atoms, largest > 150, like MoleculeNet's HIV set. Deterministic (fixed seed), no download.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "moleculenet"
DATASETS = ("bbbp", "clintox", "esol", "lipo", "sider", "tox21")
#: Side chains of the residues, SMILES fragments attached to the alpha carbon.
SIDE_CHAINS = (
    "C", "CC(C)C", "CC(C)CC", "CO", "CS", "CCC(=O)O", "CCCCN", "Cc1ccccc1", "Cc1ccc(O)cc1",
    "Cc1c[nH]c2ccccc12", "Cc1c[nH]cn1", "CC(N)=O", "CCCNC(=N)N", "C(C)O",
)


def nci_smiles() -> list[str]:
    import rdkit

    path = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"
    with open(path, encoding="utf-8") as handle:
        return [line.split()[0] for line in handle if line.strip()]


def moleculenet_smiles() -> list[str]:
    smiles = []
    for name in DATASETS:
        with open(SHARED / f"{name}.csv", newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            column = next(c for c in reader.fieldnames if c.lower() == "smiles")
            smiles.extend(row[column] for row in reader)
    return smiles


def peptide(rng: random.Random) -> str:
    """A linear peptide, N- to C-terminus, with a proline now and then (a ring in the chain)."""
    parts = ["N"]
    for _ in range(rng.randint(15, 35)):
        if rng.random() < 0.1:
            parts.append("C1CCCN1C(=O)" if len(parts) > 1 else "C(C)C(=O)N")
        else:
            parts.append(f"C({rng.choice(SIDE_CHAINS)})C(=O)N")
    return "".join(parts) + "CC(=O)O"


def library(large: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return moleculenet_smiles() + nci_smiles() + [peptide(rng) for _ in range(large)]


def write_library(path: Path, large: int = 300, seed: int = 0) -> int:
    rows = library(large, seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "smiles"])
        writer.writerows([f"m{i}", s] for i, s in enumerate(rows))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--large", type=int, default=300)
    args = parser.parse_args()
    print(f"{write_library(args.out, args.large)} rows -> {args.out}")


if __name__ == "__main__":
    main()
