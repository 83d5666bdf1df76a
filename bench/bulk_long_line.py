"""Benchmark: one very long NDJSON line, landed from a bulk download and from a folder.

Writes a file of a few small Patients and one Binary whose line is ``--line-mb``
MB long, then times ``cartfhir.extract.extract`` on it twice: from a folder
(the reference) and as a system-level bulk ``$export`` served over loopback
HTTP by the tests' stub server. The bulk download should cost at most about
twice the folder (it splits lines as fast; the rest is HTTP and threads).
With ``--bomb-mb`` it also times a bulk file that is a gzip bomb (that many MB
of gzip holding one line of spaces, 1000-fold) until the default caps stop it.

    python bench/bulk_long_line.py --line-mb 8 --bomb-mb 20
"""

from __future__ import annotations

import argparse
import base64
import gzip
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cartfhir.api import extract  # noqa: E402
from cartfhir.config import parse_config  # noqa: E402
from tests.extract.stub_server import FakeFhir, serve  # noqa: E402


def resources(line_mb: float) -> list[dict]:
    """Three Patients and one Binary whose line is about ``line_mb`` MB."""
    payload = base64.b64encode(bytes(range(256)) * int(line_mb * 2**20 * 3 / 4 / 256)).decode()
    patients = [{"resourceType": "Patient", "id": f"p{i}", "active": True} for i in range(3)]
    binary = {"resourceType": "Binary", "id": "b1", "contentType": "application/pdf",
              "data": payload}
    return [patients[0], binary, *patients[1:]]


def ndjson(items: list[dict]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def timed_extract(workdir: Path, name: str, source: dict) -> tuple[float, dict, str]:
    config = parse_config({
        "study": {"name": "bench"},
        "sites": [{"id": "bench", "source": source}],
        "output": {"duckdb": str(workdir / f"{name}.duckdb")},
        "landing": {"workers": 0},
    }, base_dir=workdir)
    started = time.perf_counter()
    result = extract(config, command="bench")
    return time.perf_counter() - started, result.totals(), result.status


def bomb(mb: float) -> bytes:
    """About ``mb`` MB of gzip inflating 1000-fold into one line of spaces (many members)."""
    member = gzip.compress(b" " * 2**24, compresslevel=9)
    return member * max(1, int(mb * 2**20 / len(member)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--line-mb", type=float, default=8.0)
    parser.add_argument("--bomb-mb", type=float, default=0.0,
                        help="also time a gzip bomb of this many MB (0: skip)")
    args = parser.parse_args()

    items = resources(args.line_mb)
    data = ndjson(items)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder = workdir / "in"
        folder.mkdir()
        (folder / "Binary.ndjson").write_bytes(data)
        rows.append(("folder (reference)", len(data),
                     *timed_extract(workdir, "folder", {"kind": "ndjson", "path": str(folder)})))

        fake = FakeFhir(resources=items)
        fake.export_polls = 0
        server = serve(fake)
        try:
            bulk = {"kind": "bulk", "base_url": fake.base, "level": "system",
                    "types": ["Patient", "Binary"]}
            rows.append(("bulk $export", len(data), *timed_extract(workdir, "bulk", bulk)))
            if args.bomb_mb:
                packed = bomb(args.bomb_mb)
                fake.faults.append(lambda request: (200, {}, packed)
                                   if request.url.endswith("/Binary.ndjson") else None)
                rows.append(("gzip bomb, bulk", len(packed),
                             *timed_extract(workdir, "bomb", bulk)))
        finally:
            server.shutdown()

    print(f"one line of {args.line_mb:g} MB among {len(items) - 1} small ones; "
          f"default caps (landing.max_line_bytes, max_decompressed_bytes)")
    print(f"{'source':<20} {'MB in':>8} {'seconds':>8} {'x folder':>9} {'landed':>7} "
          f"{'rejected':>9} {'status':>8}")
    reference = rows[0][2]
    for source, size, seconds, totals, status in rows:
        print(f"{source:<20} {size / 2**20:>8.1f} {seconds:>8.2f} {seconds / reference:>9.2f} "
              f"{totals['inserted'] + totals['unchanged']:>7} {totals['rejected']:>9} "
              f"{status:>8}")


if __name__ == "__main__":
    main()
