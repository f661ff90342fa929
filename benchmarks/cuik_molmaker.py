"""molsam's atom and bond featurization beside cuik-molmaker's C++ featurizer (issue 26).

    nice -n 19 .venv/bin/python benchmarks/cuik_molmaker.py CUIK_PYTHON [--data CSV]
        [--repeats 5] [--chunk 256] [--no-probe]

CUIK_PYTHON is the python of a SEPARATE virtual environment holding cuik-molmaker, never
molsam's: each cuik-molmaker build links one RDKit's C++ libraries and pins that RDKit
(cuik-molmaker-pin 2026.3.6 requires rdkit==2026.03.6; molsam's environment has its own RDKit).
On PyPI, `cuik-molmaker` 0.2 is a stub that downloads the real wheel from NVIDIA's index at
install time; `cuik-molmaker-pin` is the real wheel:

    python3 -m venv /tmp/cuik-venv
    /tmp/cuik-venv/bin/pip install cuik-molmaker-pin      # brings rdkit==<its pin>, numpy
    nice -n 19 .venv/bin/python benchmarks/cuik_molmaker.py /tmp/cuik-venv/bin/python

What is measured, on the same SMILES (DATA, default benchmarks/library.py's ~23,400-row library;
rows either RDKit rejects are dropped, the same for both), in chunks of --chunk (molsam's
CHUNK_SIZE), one thread each (OMP/BLAS threads 1; cuik-molmaker's core links no OpenMP):

- molsam (this environment, run as `--worker molsam`): `Chem.MolFromSmiles`, then on those
  molecules `molsam.chem.features._atom_rows` and `_bond_rows` (the RDKit getters) and the whole
  `mols_to_arrays(mols, rwse_steps=0)` (every atom and bond code array, no RWSE);
  SMILES -> codes = parse + mols_to_arrays.
- cuik-molmaker (CUIK_PYTHON, `--worker cuik`): `cuik_molmaker.batch_mol_featurizer` on each
  chunk of SMILES (it parses with its own RDKit and writes one-hot float32 arrays) with the
  features closest to molsam's: atom one-hot atomic-number, chirality, degree, formal-charge,
  num-hydrogens, hybridization-expanded, atom floats radical-electron, aromatic, in-ring; bond
  bond-type-onehot, stereo, conjugated, in-ring; each bond once (duplicate_edges=False), no
  explicit H, no self loops. Also its RDKit's bare `Chem.MolFromSmiles` and the same
  batch_mol_featurizer call with no features at all (its own parse, edge arrays and call
  overhead): cuik's feature part is the full call minus either, the two bracketing it (the
  difference with the no-features call is of two close numbers, so noisy); and the cost of
  turning its one-hot blocks back into integer codes (argmax per block), what molsam would add
  on top to use it as a backend.

The two run alternately as fresh processes, one pass over all SMILES each (after a one-chunk
warm-up), --repeats times, the order swapped every repeat; figures are CPU microseconds per
molecule of the worker process (best of the repeats; wall in brackets) and ratios paired by
repeat (median). Untimed, once: cuik's output format, an atom-by-atom agreement of cuik's
decoded values with molsam's codes (translated back to RDKit values; "out of range" = one side's
vocabulary maps the value to its unknown slot), and (unless --no-probe) how cuik handles invalid
SMILES, each case in its own process (one of them kills the process).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

#: cuik-molmaker features closest to molsam's ATOM_FEATURES / BOND_FEATURES.
CUIK_ATOM_ONEHOT = ("atomic-number", "chirality", "degree", "formal-charge", "num-hydrogens",
                    "hybridization-expanded")
CUIK_ATOM_FLOAT = ("radical-electron", "aromatic", "in-ring")
CUIK_BOND = ("bond-type-onehot", "stereo", "conjugated", "in-ring")
#: What each cuik one-hot column stands for (RDKit values; enums by name), unknown slot last
#: where there is one. Read off cuik-molmaker-pin 2026.3.6's output on the library (columns no
#: library molecule reaches are inferred); the agreement check below tests them.
CUIK_VOCAB = {
    "atomic-number": tuple(range(1, 101)),
    "chirality": ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"),
    "degree": (0, 1, 2, 3, 4),
    "formal-charge": (-1, -2, 1, 2, 0),
    "num-hydrogens": (0, 1, 2, 3, 4),
    "hybridization-expanded": ("S", "SP", "SP2", "SP2D", "SP3", "SP3D", "SP3D2"),
    "bond-type-onehot": ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"),
    "stereo": ("STEREONONE", "STEREOANY", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS"),
}
#: molsam feature -> the cuik feature compared with it.
ATOM_PAIRS = (("atomic_num", "atomic-number"), ("chirality", "chirality"), ("degree", "degree"),
              ("formal_charge", "formal-charge"), ("total_hs", "num-hydrogens"),
              ("radical_electrons", "radical-electron"),
              ("hybridization", "hybridization-expanded"), ("aromatic", "aromatic"),
              ("in_ring", "in-ring"))
BOND_PAIRS = (("bond_type", "bond-type-onehot"), ("stereo", "stereo"),
              ("conjugated", "conjugated"), ("in_ring", "in-ring"))
SINGLE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                        "MKL_NUM_THREADS")}


# ----------------------------------------------------------------------------- worker side
def _timed(totals: dict, name: str, work, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    result = work(*args)
    total = totals.setdefault(name, [0.0, 0.0])
    total[0] += time.process_time() - cpu
    total[1] += time.perf_counter() - wall
    return result


def _parse(chem, chunk: list[str]) -> list:
    return [chem.MolFromSmiles(s) for s in chunk]


def _chunks(smiles: list[str], size: int) -> list[list[str]]:
    return [smiles[i : i + size] for i in range(0, len(smiles), size)]


def worker_molsam(smiles: list[str], chunk_size: int) -> dict:
    from rdkit import Chem, rdBase

    from molsam.chem.features import _atom_rows, _bond_rows, mols_to_arrays

    def one_pass(chunks):
        totals: dict = {}
        for chunk in chunks:
            with rdBase.BlockLogs():
                mols = _timed(totals, "parse", _parse, Chem, chunk)
            _timed(totals, "atom rows", _atom_rows, mols)
            _timed(totals, "bond rows", _bond_rows, mols)
            _timed(totals, "codes", mols_to_arrays, mols, 0)
        return totals

    chunks = _chunks(smiles, chunk_size)
    one_pass(chunks[:1])
    return one_pass(chunks)


def _cuik_arrays():
    import cuik_molmaker

    return (cuik_molmaker.atom_onehot_feature_names_to_array(list(CUIK_ATOM_ONEHOT)),
            cuik_molmaker.atom_float_feature_names_to_array(list(CUIK_ATOM_FLOAT)),
            cuik_molmaker.bond_feature_names_to_array(list(CUIK_BOND)))


def _cuik_widths() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(name, columns) of each atom block and each bond block, in output order."""
    import cuik_molmaker

    none = np.array([], dtype=np.int64)

    def width(onehot=(), floats=(), bond=()):
        out = cuik_molmaker.mol_featurizer(
            "CCO", cuik_molmaker.atom_onehot_feature_names_to_array(list(onehot)) if onehot
            else none, cuik_molmaker.atom_float_feature_names_to_array(list(floats)) if floats
            else none, cuik_molmaker.bond_feature_names_to_array(list(bond)) if bond else none,
            False, False, False, False)
        return out[1 if bond else 0].shape[1]

    atoms = [(n, width(onehot=[n])) for n in CUIK_ATOM_ONEHOT]
    atoms += [(n, width(floats=[n])) for n in CUIK_ATOM_FLOAT]
    return atoms, [(n, width(bond=[n])) for n in CUIK_BOND]


def _decode(features: np.ndarray, blocks: list[tuple[str, int]]) -> np.ndarray:
    """Integer codes [rows, blocks] from cuik's float32 one-hot/float columns: argmax of each
    one-hot block, the value of each one-column float."""
    codes = np.empty((features.shape[0], len(blocks)), dtype=np.uint8)
    start = 0
    for column, (_, width) in enumerate(blocks):
        part = features[:, start : start + width]
        codes[:, column] = part[:, 0] if width == 1 else part.argmax(axis=1)
        start += width
    return codes


def _decode_both(out, atom_blocks, bond_blocks) -> tuple[np.ndarray, np.ndarray]:
    return _decode(out[0], atom_blocks), _decode(out[1], bond_blocks)


def worker_cuik(smiles: list[str], chunk_size: int) -> dict:
    import cuik_molmaker
    from rdkit import Chem, rdBase

    onehot, floats, bond = _cuik_arrays()
    atom_blocks, bond_blocks = _cuik_widths()
    none = np.array([], dtype=np.int64)

    def one_pass(chunks):
        totals: dict = {}
        for chunk in chunks:
            with rdBase.BlockLogs():  # as molsam's featurize_chunk: no RDKit log lines
                _timed(totals, "parse", _parse, Chem, chunk)
                out = _timed(totals, "cuik", cuik_molmaker.batch_mol_featurizer,
                             chunk, onehot, floats, bond, False, False, False, False)
                _timed(totals, "cuik empty", cuik_molmaker.batch_mol_featurizer,
                       chunk, none, none, none, False, False, False, False)
            _timed(totals, "decode", _decode_both, out, atom_blocks, bond_blocks)
        return totals

    chunks = _chunks(smiles, chunk_size)
    one_pass(chunks[:1])
    return one_pass(chunks)


def worker_check(smiles: list[str], out: Path) -> dict:
    """Untimed, in cuik's environment: which SMILES its RDKit rejects, versions, the output
    format, and the decoded values of every valid molecule (saved to `out`, .npz)."""
    import cuik_molmaker
    import rdkit
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        rejected = [i for i, s in enumerate(smiles)
                    if (m := Chem.MolFromSmiles(s)) is None or m.GetNumAtoms() == 0]
    keep = sorted(set(range(len(smiles))) - set(rejected))
    onehot, floats, bond = _cuik_arrays()
    atom_blocks, bond_blocks = _cuik_widths()
    atoms, bonds, counts, bond_counts = [], [], [], []
    for chunk in _chunks([smiles[i] for i in keep], 256):
        with rdBase.BlockLogs():
            arrays = cuik_molmaker.batch_mol_featurizer(chunk, onehot, floats, bond, False,
                                                        False, False, False)
        atoms.append(_decode(arrays[0], atom_blocks))
        bonds.append(_decode(arrays[1], bond_blocks))
        counts.append(np.bincount(arrays[4], minlength=len(chunk)))
        # each bond belongs to the molecule of its first atom (edge_index is chunk-global)
        bond_counts.append(np.bincount(arrays[4][arrays[2][0]], minlength=len(chunk)))
    np.savez(out, atoms=np.concatenate(atoms), bonds=np.concatenate(bonds),
             atom_counts=np.concatenate(counts), bond_counts=np.concatenate(bond_counts))
    sample = cuik_molmaker.batch_mol_featurizer(["CC(=O)O", "c1ccccc1"], onehot, floats, bond,
                                                False, False, False, False)
    try:
        from importlib.metadata import version

        package = version("cuik-molmaker-pin")
    except ImportError:  # PackageNotFoundError is one
        package = "?"
    return {
        "rejected": rejected, "rdkit": rdkit.__version__, "package": package,
        "atom_blocks": atom_blocks, "bond_blocks": bond_blocks,
        "sample": [(list(a.shape), str(a.dtype)) for a in sample],
        "sample_arrays": [a.tolist() for a in sample[2:]],
        "functions": sorted(n for n in dir(cuik_molmaker) if n.endswith("featurizer")),
    }


PROBES = {
    "parse error, atom floats (molsam-like set)": (["CCO", "C1CC", "CC"], True),
    "parse error, no atom floats": (["CCO", "C1CC", "CC"], False),
    "empty SMILES, atom floats": (["CCO", "", "CC"], True),
    "valence error (sanitization)": (["CCO", "C(C)(C)(C)(C)C", "CC"], False),
}


def worker_probe(case: str) -> dict:
    import cuik_molmaker
    from rdkit import rdBase

    smiles, with_floats = PROBES[case]
    onehot, floats, bond = _cuik_arrays()
    if not with_floats:
        floats = np.array([], dtype=np.int64)
    with rdBase.BlockLogs():
        try:
            out = cuik_molmaker.batch_mol_featurizer(smiles, onehot, floats, bond, False, False,
                                                     False, False)
        except RuntimeError as error:  # what cuik-molmaker raises for RDKit's errors
            return {"outcome": f"{type(error).__name__} for the whole batch: {error}"}
    atoms = np.bincount(out[4], minlength=len(smiles)).tolist()
    return {"outcome": f"no error; atoms per row {atoms} (the bad row: 0 atoms, no reason)"}


# ------------------------------------------------------------------------------- main side
def run_worker(python: str, mode: str, smiles_file: Path, *extra: str) -> dict:
    # -P: the script's folder is not put on sys.path, or `import cuik_molmaker` would find this
    # file (same name) instead of the package.
    command = [python, "-P", str(Path(__file__).resolve()), "--worker", mode, str(smiles_file),
               *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, **SINGLE_THREAD})
    if done.returncode < 0:
        return {"outcome": f"process killed by {signal.Signals(-done.returncode).name}"}
    if done.returncode != 0:
        sys.exit(f"{mode} worker failed ({python}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _values(codes: np.ndarray, choices) -> list:
    """Code -> value (None for the unknown slot)."""
    return [choices[c] if c < len(choices) else None for c in codes.tolist()]


def agreement(smiles: list[str], decoded: dict, check: dict) -> list[str]:
    """Per feature: molecules' atoms/bonds where cuik's value equals molsam's."""
    from rdkit import Chem, rdBase

    from molsam.chem.features import ATOM_FEATURES, BOND_FEATURES, mols_to_arrays

    with rdBase.BlockLogs():
        mols = [Chem.MolFromSmiles(s) for s in smiles]
    arrays = mols_to_arrays(mols, 0)
    lines = []
    if not (np.array_equal(arrays.atom_counts, decoded["atom_counts"])
            and np.array_equal(arrays.bond_counts, decoded["bond_counts"])):
        return ["atom or bond counts differ between molsam and cuik: no per-atom comparison"]
    enums = {name: value for kind in (Chem.rdchem.HybridizationType, Chem.rdchem.ChiralType,
                                      Chem.rdchem.BondType, Chem.rdchem.BondStereo)
             for name, value in kind.names.items()}

    def compare(kind, pairs, ours, features, theirs, blocks):
        names = [n for n, _ in blocks]
        for (molsam_name, cuik_name), column in zip(pairs, range(len(pairs))):
            vocabulary = features[column]
            mine = _values(ours[:, column], [int(c) for c in vocabulary.choices])
            raw = theirs[:, names.index(cuik_name)]
            if cuik_name in CUIK_VOCAB:
                choices = [int(enums[v]) if isinstance(v, str) else v
                           for v in CUIK_VOCAB[cuik_name]]
                other = _values(raw, choices)
            else:  # float features: the value itself
                other = raw.astype(int).tolist()
            same = sum(a == b for a, b in zip(mine, other))
            unknown = sum(a != b and (a is None or b is None) for a, b in zip(mine, other))
            differ = len(mine) - same - unknown
            line = (f"  {kind} {molsam_name:<18} ~ {cuik_name:<23} {same / len(mine):8.4%} "
                    f"equal; {unknown:5d} out of one side's range; {differ:5d} different values")
            if same < len(mine):  # what the two sides say where they part
                labels = [str(c).split(".")[-1] for c in vocabulary.choices]
                cuik_labels = CUIK_VOCAB.get(cuik_name)
                cases = Counter(
                    (labels[m] if m < len(labels) else "unknown",
                     (str(cuik_labels[t]) if t < len(cuik_labels) else "unknown")
                     if cuik_labels else str(int(t)))
                    for m, t, a, b in zip(ours[:, column].tolist(), raw.tolist(), mine, other)
                    if a != b)
                line += " (molsam/cuik: " + ", ".join(
                    f"{m}/{t} x{n}" for (m, t), n in cases.most_common(4)) + ")"
            lines.append(line)

    compare("atom", ATOM_PAIRS, arrays.atom_codes, ATOM_FEATURES, decoded["atoms"],
            check["atom_blocks"])
    compare("bond", BOND_PAIRS, arrays.bond_codes, BOND_FEATURES, decoded["bonds"],
            check["bond_blocks"])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cuik_python", help="python of the venv holding cuik-molmaker")
    parser.add_argument("--data", type=Path, default=None, help="CSV [default: the library]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--no-probe", action="store_true", help="skip the invalid-SMILES cases")
    args = parser.parse_args()

    import rdkit
    from rdkit import rdBase

    from molsam.chem.features import parse_smiles
    from molsam.data.table import read_table

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = args.data
        if data is None:
            from library import write_library  # benchmarks/, this script's own folder

            data = folder / "library.csv"
            write_library(data)
        rows = read_table(data).smiles
        with rdBase.BlockLogs():
            ours = [s for s in rows if parse_smiles(s)[0] is not None]
        every = folder / "valid.smi"
        every.write_text("\n".join(ours) + "\n", encoding="utf-8")
        check = run_worker(args.cuik_python, "check", every, "--out", str(folder / "cuik.npz"))
        rejected = set(check["rejected"])
        smiles = [s for i, s in enumerate(ours) if i not in rejected]
        common = folder / "common.smi"
        common.write_text("\n".join(smiles) + "\n", encoding="utf-8")
        decoded = dict(np.load(folder / "cuik.npz"))  # the molecules of `smiles`, in order

        results = {"molsam": [], "cuik": []}
        for repeat in range(args.repeats):
            order = ("molsam", "cuik") if repeat % 2 == 0 else ("cuik", "molsam")
            for mode in order:
                python = sys.executable if mode == "molsam" else args.cuik_python
                results[mode].append(run_worker(python, mode, common, "--chunk", str(args.chunk)))
        probes = {} if args.no_probe else {
            case: run_worker(args.cuik_python, "probe", common, "--case", case)["outcome"]
            for case in PROBES}
        agree = agreement(smiles, decoded, check)

    n = len(smiles)

    def us(seconds):
        return seconds / n * 1e6

    def best(mode, stage, which=0):
        return min(r[stage][which] for r in results[mode])

    for r in results["molsam"]:
        r["atom+bond rows"] = [r["atom rows"][k] + r["bond rows"][k] for k in (0, 1)]
        r["SMILES -> codes"] = [r["parse"][k] + r["codes"][k] for k in (0, 1)]
    for r in results["cuik"]:
        r["cuik - parse"] = [r["cuik"][k] - r["parse"][k] for k in (0, 1)]
        r["cuik - empty"] = [r["cuik"][k] - r["cuik empty"][k] for k in (0, 1)]
        r["cuik + decode"] = [r["cuik"][k] + r["decode"][k] for k in (0, 1)]
    print(f"{data.name}: {len(rows)} rows; {n} valid for both RDKits (molsam's RDKit "
          f"{rdkit.__version__} rejects {len(rows) - len(ours)}, cuik's {check['rdkit']} "
          f"{len(rejected)} more); chunks of {args.chunk}; one thread each; best of "
          f"{args.repeats} alternating processes; load average {os.getloadavg()[0]:.1f}")
    print(f"{'per molecule':<58} {'CPU us':>8} {'(wall)':>8}")
    rows_out = [
        ("molsam", "parse", f"RDKit {rdkit.__version__} MolFromSmiles"),
        ("molsam", "atom rows", "molsam _atom_rows"),
        ("molsam", "bond rows", "molsam _bond_rows"),
        ("molsam", "atom+bond rows", "molsam _atom_rows + _bond_rows"),
        ("molsam", "codes", "molsam mols_to_arrays(rwse_steps=0): all codes"),
        ("molsam", "SMILES -> codes", "molsam SMILES -> codes (parse + mols_to_arrays)"),
        ("cuik", "parse", f"RDKit {check['rdkit']} MolFromSmiles (cuik's env)"),
        ("cuik", "cuik", "cuik batch_mol_featurizer: SMILES -> one-hot"),
        ("cuik", "cuik empty", "cuik batch_mol_featurizer, no features: its parse + edges"),
        ("cuik", "cuik - parse", "cuik feature part (batch_mol_featurizer - parse)"),
        ("cuik", "cuik - empty", "cuik feature part (full - no features; noisy difference)"),
        ("cuik", "decode", "decode cuik one-hot -> codes (argmax per block)"),
        ("cuik", "cuik + decode", "cuik SMILES -> codes (featurizer + decode)"),
    ]
    for mode, stage, label in rows_out:
        print(f"{label:<58} {us(best(mode, stage)):8.1f} {us(best(mode, stage, 1)):8.1f}")

    def ratio(num_mode, num, den_mode, den):
        pairs = [a[num][0] / b[den][0] for a, b in zip(results[num_mode], results[den_mode])]
        return (f"{statistics.median(pairs):.2f}x (per repeat "
                f"{', '.join(f'{p:.2f}' for p in pairs)}; best to best "
                f"{best(num_mode, num) / best(den_mode, den):.2f}x)")

    print("ratios of CPU time, > 1: cuik-molmaker faster; paired by repeat, median:")
    print(f"  SMILES -> atom/bond arrays, molsam codes / cuik one-hot : "
          f"{ratio('molsam', 'SMILES -> codes', 'cuik', 'cuik')}")
    print(f"  SMILES -> codes, molsam / cuik + decode                 : "
          f"{ratio('molsam', 'SMILES -> codes', 'cuik', 'cuik + decode')}")
    print(f"  features from a parsed molecule, molsam rows / cuik part: "
          f"{ratio('molsam', 'atom+bond rows', 'cuik', 'cuik - parse')}")
    print(f"  same, molsam mols_to_arrays(0) / cuik part              : "
          f"{ratio('molsam', 'codes', 'cuik', 'cuik - parse')}")
    print(f"  molsam rows / cuik part measured as full - no features  : "
          f"{ratio('molsam', 'atom+bond rows', 'cuik', 'cuik - empty')}")
    print(f"  control, RDKit parse {rdkit.__version__} / {check['rdkit']}        : "
          f"{ratio('molsam', 'parse', 'cuik', 'parse')}")

    atom_width = sum(w for _, w in check["atom_blocks"])
    bond_width = sum(w for _, w in check["bond_blocks"])
    atoms, bonds = len(decoded["atoms"]), len(decoded["bonds"])
    print(f"cuik-molmaker-pin {check['package']} (RDKit {check['rdkit']}); functions "
          f"{', '.join(check['functions'])}")
    print(f"  batch_mol_featurizer -> [atom features, bond features, edge_index, "
          f"rev_edge_index, batch]; for CC(=O)O + c1ccccc1: "
          f"{', '.join(f'{s} {d}' for s, d in check['sample'])}")
    print(f"  atom blocks: {', '.join(f'{n} {w}' for n, w in check['atom_blocks'])} "
          f"= {atom_width} float32 columns")
    print(f"  bond blocks: {', '.join(f'{n} {w}' for n, w in check['bond_blocks'])} "
          f"= {bond_width} float32 columns")
    print(f"  bytes per molecule on the library ({atoms / n:.1f} atoms, {bonds / n:.1f} bonds): "
          f"cuik float32 features {4 * (atoms * atom_width + bonds * bond_width) / n:.0f} "
          f"+ int64 edge_index/rev_edge_index/batch {8 * (2 * bonds + 2 * bonds + atoms) / n:.0f}; "
          f"molsam uint8 codes {(9 * atoms + 4 * bonds) / n:.0f} + int64 bond_atoms "
          f"{16 * bonds / n:.0f}")
    print("agreement with molsam's codes, value by value, every atom and bond:")
    for line in agree:
        print(line)
    if probes:
        print("invalid SMILES in one batch (each case its own process):")
        for case, outcome in probes.items():
            print(f"  {case:<44}: {outcome}")


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=("molsam", "cuik", "check", "probe"))
    parser.add_argument("smiles_file", type=Path)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--case")
    args = parser.parse_args(argv)
    smiles = args.smiles_file.read_text(encoding="utf-8").splitlines()
    if args.worker == "molsam":
        result = worker_molsam(smiles, args.chunk)
    elif args.worker == "cuik":
        result = worker_cuik(smiles, args.chunk)
    elif args.worker == "check":
        result = worker_check(smiles, args.out)
    else:
        result = worker_probe(args.case)
    print(json.dumps(result))


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main(sys.argv[1:])
    else:
        main()
