"""Benchmark the data pipeline: preparation throughput and peak memory, loader throughput, padding.

    python scripts/benchmark_data.py                       # 250k and 1M sequences (about 2 min)
    python scripts/benchmark_data.py --num-sequences 20000 # a quick run (sizes 5k and 20k)

The input is SYNTHETIC: a FASTA.gz of UniRef50-like records (UniRef50-style headers marked
``Tax=synthetic``, 60-column lines, gzip level 6) whose lengths are drawn from the shipped real
sample and whose residues are drawn independently from that sample's composition. It exercises the
parser, tokenizer and writer like real UniRef50 does; it is not biological data.

Measured:
  * preparation: each size is prepared in a fresh subprocess; residues/s is the prepare_cache call
    time, peak RSS is that subprocess's ru_maxrss (os.wait4), to show memory stays flat with size;
  * loader: real tokens/s of TrainBatchStream (packing on, max_length 512) over the largest cache;
  * padding waste: one epoch of the shipped training sample, packed at length 512.
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protlig_dd.data.alphabet import Alphabet  # noqa: E402
from protlig_dd.data.cache import PreparedCache, prepare_cache  # noqa: E402
from protlig_dd.data.pipeline import embedded_train_specs  # noqa: E402
from protlig_dd.data.readers import SourceSpec  # noqa: E402
from protlig_dd.data.sequence_set import SequenceSet  # noqa: E402

LINE_WIDTH = 60
CHUNK_SEQUENCES = 20000


def generate_fasta(
    path: Path, num_sequences: int, sample: PreparedCache, alphabet: Alphabet, seed: int
) -> None:
    """Write ``num_sequences`` synthetic UniRef50-like records to the FASTA.gz ``path``."""
    rng = np.random.default_rng(seed)
    sample_lengths = sample.lengths
    composition = sample.residue_counts / sample.residue_counts.sum()
    # 65,536-entry table of letters in proportion to the composition: one integer draw per residue.
    cumulative = np.round(np.cumsum(composition) * 65536).astype(np.int64)
    letters = np.frombuffer(alphabet.residues.encode(), dtype=np.uint8)
    table = letters[np.searchsorted(cumulative, np.arange(65536), side="right").clip(max=len(letters) - 1)]
    with gzip.open(path, "wb", compresslevel=6) as out:
        for first in range(0, num_sequences, CHUNK_SEQUENCES):
            count = min(CHUNK_SEQUENCES, num_sequences - first)
            lengths = rng.choice(sample_lengths, size=count)
            residues = table[rng.integers(0, 65536, size=int(lengths.sum()), dtype=np.uint16)].tobytes()
            parts = []
            start = 0
            for k, length in enumerate(lengths.tolist()):
                seq = residues[start : start + length]
                start += length
                name = f"SYN{first + k:010d}"
                parts.append(
                    f">UniRef50_{name} Synthetic record n=1 Tax=synthetic TaxID=0 RepID={name}\n".encode()
                )
                parts.append(b"\n".join(seq[i : i + LINE_WIDTH] for i in range(0, length, LINE_WIDTH)))
                parts.append(b"\n")
            out.write(b"".join(parts))


def prepare_worker(source: str, out: str, result: str) -> None:
    """Subprocess body: prepare one source and write timing as JSON to ``result``."""
    start = time.perf_counter()
    cache = prepare_cache([SourceSpec(source)], out, Alphabet(), force=True, progress=False)
    seconds = time.perf_counter() - start
    Path(result).write_text(
        json.dumps({"seconds": seconds, "sequences": len(cache), "residues": cache.num_residues})
    )


def measure_preparation(source: Path, out: Path) -> dict[str, Any]:
    """Run prepare_worker in a subprocess; return its timing and peak RSS."""
    result = out.parent / f"{out.name}.result.json"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--prepare-worker", str(source), str(out), str(result)],
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"preparation of {source} failed with exit code {proc.returncode}")
    timing = json.loads(result.read_text())
    return {
        **timing,
        "residues_per_second": timing["residues"] / timing["seconds"],
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports kilobytes
        "gz_mb": source.stat().st_size / 2**20,
    }


def packed_stream(cache: PreparedCache, alphabet: Alphabet, tokens_per_batch: int):
    """The packed training stream at length 512 over a whole cache (what the loader figures measure)."""
    from protlig_dd.data.loader import TrainBatchStream

    return TrainBatchStream(
        SequenceSet.whole(cache),
        max_length=512,
        tokens_per_batch=tokens_per_batch,
        packing=True,
        long_sequences="crop",
        bucket_by_length=False,
        pad_id=alphabet.pad_id,
        seed=0,
    )


def measure_loader(
    cache: PreparedCache, alphabet: Alphabet, tokens_per_batch: int, num_batches: int
) -> dict[str, Any]:
    """Real tokens per second of the packed training stream."""
    stream = packed_stream(cache, alphabet, tokens_per_batch)
    next(stream)  # first window planning and epoch order are one-off costs, timed separately
    start = time.perf_counter()
    real = 0
    for _ in range(num_batches):
        batch = next(stream)
        real += int(batch.num_real_tokens or 0)
    seconds = time.perf_counter() - start
    return {
        "tokens_per_batch": tokens_per_batch,
        "batches": num_batches,
        "real_tokens_per_second": real / seconds,
        "padding_waste": stream.padding_waste,
    }


def measure_padding(sample: PreparedCache, alphabet: Alphabet, tokens_per_batch: int) -> dict[str, Any]:
    """Padding waste over one epoch of the shipped sample, packed at length 512."""
    stream = packed_stream(sample, alphabet, tokens_per_batch)
    batches = 0
    while True:
        state = stream.state_dict()
        next(stream)
        if stream.epoch > 0:
            stream.load_state_dict(state)  # exclude the first batch of epoch 1 from the statistic
            break
        batches += 1
    return {"batches": batches, "padding_waste": stream.padding_waste, "tokens_per_batch": tokens_per_batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-sequences", type=int, default=1_000_000, help="largest synthetic size")
    parser.add_argument("--sizes", default="", help="comma-separated sizes (default: N/4 and N)")
    parser.add_argument("--tokens-per-batch", type=int, default=8192, help="loader token budget per batch")
    parser.add_argument("--loader-batches", type=int, default=200, help="batches timed for the loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmark_data.json", help="JSON result file")
    parser.add_argument(
        "--prepare-worker", nargs=3, metavar=("SOURCE", "OUT", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.prepare_worker:
        prepare_worker(*args.prepare_worker)
        return 0
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else [args.num_sequences // 4, args.num_sequences]
    )
    alphabet = Alphabet()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "input": "synthetic UniRef50-like FASTA.gz (lengths from the shipped sample)",
        "preparation": [],
    }
    with tempfile.TemporaryDirectory(prefix="benchmark_data_") as tmp_name:
        tmp = Path(tmp_name)
        sample = prepare_cache(embedded_train_specs("uniref50_17taxa"), tmp / "sample", alphabet, progress=False)
        for size in sizes:
            source = tmp / f"synthetic_{size}.fasta.gz"
            start = time.perf_counter()
            generate_fasta(source, size, sample, alphabet, args.seed)
            generated = time.perf_counter() - start
            row = {
                "num_sequences": size,
                "generate_seconds": generated,
                **measure_preparation(source, tmp / f"cache_{size}"),
            }
            results["preparation"].append(row)
            print(
                f"prepare {size:>9,} seq: {row['residues']:>12,} res in {row['seconds']:6.2f} s = "
                f"{row['residues_per_second'] / 1e6:6.2f} M res/s, peak RSS {row['peak_rss_mb']:7.1f} MB",
                flush=True,
            )
        largest = PreparedCache.open(tmp / f"cache_{max(sizes)}")
        results["loader"] = measure_loader(largest, alphabet, args.tokens_per_batch, args.loader_batches)
        results["padding_shipped_sample"] = measure_padding(sample, alphabet, args.tokens_per_batch)
    loader = results["loader"]
    padding = results["padding_shipped_sample"]
    print(
        f"loader (packed, L=512, {loader['tokens_per_batch']} tokens/batch): "
        f"{loader['real_tokens_per_second'] / 1e6:.2f} M real tokens/s, padding {loader['padding_waste']:.2%}"
    )
    print(f"padding waste, shipped sample, packed L=512, one epoch: {padding['padding_waste']:.2%}")
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
