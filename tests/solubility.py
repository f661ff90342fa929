"""A small SD file laid out like RDKit's solubility set (ID, NAME, SOL, SOL_classification) and
the issue's CSV built from it. RDKit's own solubility.*.sdf are not shipped in its wheel, so the
molecules come from the one it ships, Data/NCI/first_200.props.sdf, with SOL = -CLOGP and the
classes cut at its terciles."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import rdkit
from rdkit import Chem, rdBase

NCI = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_200.props.sdf"
CLASSES = ("(A) low", "(B) medium", "(C) high")
#: A record RDKit reads but cannot sanitize (a carbon with five bonds).
BAD_RECORD = (
    "bad\n     RDKit          2D\n\n  6  5  0  0  0  0  0  0  0  0999 V2000\n"
    + "".join(f"    {x}.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
              for x in range(6))
    + "".join(f"  1  {b}  1  0\n" for b in range(2, 7))
    + "M  END\n>  <ID>  \n999\n\n>  <NAME>  \nbroken\n\n>  <SOL>  \n0.5\n\n"
    + ">  <SOL_classification>  \n(B) medium\n\n$$$$\n"
)


def molecules(n: int) -> list[Chem.Mol]:
    """The first n readable NCI molecules with at least 4 heavy atoms."""
    found = []
    for mol in Chem.ForwardSDMolSupplier(str(NCI)):
        if mol is not None and mol.GetNumAtoms() >= 4:
            found.append(mol)
        if len(found) == n:
            return found
    raise AssertionError(f"{NCI} has fewer than {n} usable molecules")


def write_solubility_sdf(path: Path, n: int = 36, bad_record: int | None = 5) -> Path:
    """n molecules (plus an unsanitizable record at 1-based position `bad_record`), each with
    ID (1..n), NAME, SOL and SOL_classification properties; `.gz` compresses."""
    mols = molecules(n)
    sol = np.array([-float(m.GetProp("CLOGP")) for m in mols])
    cuts = np.quantile(sol, [1 / 3, 2 / 3])
    blocks = []
    for i, (mol, value) in enumerate(zip(mols, sol)):
        out = Chem.Mol(mol)
        out.ClearComputedProps()
        for name in list(out.GetPropNames()):
            out.ClearProp(name)
        out.SetProp("_Name", f"nci-{i + 1}")
        out.SetProp("ID", str(i + 1))
        out.SetProp("NAME", f"compound {chr(65 + i % 26)}{i}")
        out.SetProp("SOL", f"{value:.2f}")
        out.SetProp("SOL_classification", CLASSES[int(np.searchsorted(cuts, value))])
        block = Chem.MolToMolBlock(out) + "".join(
            f">  <{p}>  \n{out.GetProp(p)}\n\n" for p in ("ID", "NAME", "SOL", "SOL_classification")
        ) + "$$$$\n"
        blocks.append(block)
    if bad_record is not None:
        blocks.insert(bad_record - 1, BAD_RECORD)
    data = "".join(blocks).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_solubility_csv(sdf: Path, path: Path) -> Path:
    """The issue's CSV (ID, NAME, smiles, SOL, SOL_classification) from the SD file's readable
    records, read with RDKit's own reader."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "NAME", "smiles", "SOL", "SOL_classification"])
        blocker = rdBase.BlockLogs()  # the bad record's sanitization message is expected
        for mol in Chem.SDMolSupplier(str(sdf)):
            if mol is not None:
                writer.writerow([mol.GetProp("ID"), mol.GetProp("NAME"), Chem.MolToSmiles(mol),
                                 mol.GetProp("SOL"), mol.GetProp("SOL_classification")])
        del blocker
    return path
