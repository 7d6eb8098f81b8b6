"""A separate process that adds images to a library, printing "ACK <sha>" after each add
returns (i.e. once the add is acknowledged). Used by the crash and two-process tests.

    python tests/library_worker.py LIBRARY_DIR SEED COUNT [BATCH]
"""
import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from core.library.store import Library, NewImage  # noqa: E402
from core_fixtures import distinct_pngs  # noqa: E402

DIM = 8


def main(root: str, seed: int, count: int, batch: int = 1) -> None:
    lib = Library(root, "test-model", DIM)
    images = distinct_pngs(count, seed)
    for i in range(0, count, batch):
        chunk = images[i:i + batch]
        news = []
        for data in chunk:
            sha = hashlib.sha256(data).hexdigest()
            vec = torch.nn.functional.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(int(sha[:8], 16))), dim=0)
            news.append(NewImage(data, sha, ".png", vec, {"name": f"{sha[:6]}.png"}))
        lib.add(news)
        for n in news:
            print("ACK", n.sha256, flush=True)
    print("DONE", len(lib), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
