"""Peak host memory while loading a transformer: one process vs each rank of a 2-rank tensor-parallel job that
reads only its slices (shard by shard), and vs full-load-then-split (each rank reads everything first).

    python bench/tp_load.py                  # writes a ~670 MB fp32 random checkpoint to a temporary folder
    python bench/tp_load.py --folder MODEL   # an existing model folder

Each process reports its resident memory before loading (torch imported, process group up), its peak once
loaded and every weight read (`ru_maxrss`, which counts the safetensors pages it touched), and the parameter
bytes it holds."""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 2**20
RANKS = 2


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(folder: str, mode: str, report: Path) -> None:
    """One process's load (mode: alone, sharded, split); writes `report/<rank>.json`."""
    import torch

    from lumina_mgpt.model import load_transformer
    from lumina_mgpt.model.parallel import apply_tensor_parallel, tensor_parallel_mesh

    mesh = None if mode == "alone" else tensor_parallel_mesh(RANKS, torch.device("cpu"))
    before = _rss_now()
    if mode == "sharded":
        model = load_transformer(folder, mesh=mesh)
    else:
        model = load_transformer(folder)
        if mode == "split":
            apply_tensor_parallel(model, mesh)
    local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    for tensor in local:  # read every weight, as a forward does (an fp32 CPU load may map the file lazily)
        tensor.sum()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    held = sum(t.numel() * t.element_size() for t in local)
    rank = int(os.environ.get("RANK", 0))
    row = {"mode": mode, "rank": rank, "before": before, "peak": peak, "held": held}
    (report / f"{rank}.json").write_text(json.dumps(row))


def _random_checkpoint(folder: Path) -> None:
    import torch

    from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer, save_transformer

    config = ChameleonConfig(
        vocab_size=32768,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    torch.manual_seed(0)
    save_transformer(ChameleonTransformer(config), folder)


def _run(folder: Path, mode: str, report: Path) -> list[dict]:
    report.mkdir()
    me = [str(Path(__file__).resolve()), "--measure", mode, "--folder", str(folder), "--report", str(report)]
    command = [sys.executable, *me]
    if mode != "alone":
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={RANKS}", *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return [json.loads(file.read_text()) for file in sorted(report.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--measure", choices=["alone", "sharded", "split"])
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.measure:
        measure(str(args.folder), args.measure, args.report)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder
        if folder is None:
            folder = Path(scratch) / "model"
            _random_checkpoint(folder)
        modes = ("alone", "sharded", "split")
        rows = [r for mode in modes for r in _run(folder, mode, Path(scratch) / mode)]
    alone = rows[0]["peak"] - rows[0]["before"]
    print("| load | rank | params held (MiB) | peak RSS (MiB) | peak - before load (MiB) | vs one process |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        grown = r["peak"] - r["before"]
        print(
            f"| {r['mode']} | {r['rank']} | {r['held'] / MIB:.0f} | {r['peak'] / MIB:.0f} | {grown / MIB:.0f} "
            f"| {grown / alone:.2f} |"
        )


if __name__ == "__main__":
    main()
