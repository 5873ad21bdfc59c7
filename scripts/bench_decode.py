"""Memory and time of reading a large JPEG at the size an embedding needs, side by side.

    python scripts/bench_decode.py [--side 4000]

Writes one photo-like JPEG (side x 3/4 side) to a temporary folder, then reads it in a fresh
process for each way: whole (no draft), capped at data/images.MAX_SIDE (what every read did
before), and decoded reduced for a 384 px view (`read_image(..., needed=384)`, what embedding
does now). Prints each way's peak resident memory (ru_maxrss) and time, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import json, resource, sys, time
from PIL import Image
from competition.data import images
path, way = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
for _ in range(3):
    if way == "whole":
        with Image.open(path) as image:
            array = images.np.asarray(image.convert("RGB"))
    elif way == "capped":
        array = images.read_image(path)
    else:
        array = images.read_image(path, needed=int(way))
seconds = (time.perf_counter() - started) / 3
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {"shape": list(array.shape), "seconds": seconds, "peak_mb": peak / 1024, "added_mb": (peak - before) / 1024}
print(json.dumps(result))
"""


def make_photo(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (side * 3 // 4 // 16, side // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
    image.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "large.jpg"
        make_photo(photo, args.side)
        results = {}
        for way in ("whole", "capped", "384"):
            output = subprocess.run(
                [sys.executable, "-c", MEASURE, str(photo), way], capture_output=True, text=True, check=True
            ).stdout
            results[way] = json.loads(output)
    print(f"{args.side}x{args.side * 3 // 4} JPEG, each way in a fresh process (3 reads):")
    for way, result in results.items():
        label = {"whole": "whole decode", "capped": "capped at 2048 px", "384": "reduced for a 384 px view"}[way]
        print(
            f"  {label:27s} -> {tuple(result['shape'])}: {result['seconds'] * 1000:6.0f} ms, "
            f"+{result['added_mb']:.0f} MB resident (peak {result['peak_mb']:.0f} MB)"
        )
    whole, view = results["whole"], results["384"]
    print(
        f"reduced vs whole: peak {whole['peak_mb'] / view['peak_mb']:.1f}x lower (+{view['added_mb']:.0f} MB vs "
        f"+{whole['added_mb']:.0f} MB over the interpreter), {whole['seconds'] / view['seconds']:.1f}x faster"
    )


if __name__ == "__main__":
    main()
