"""FAISS indexes (core.library.ann): recall against brute force, caller ids, add/remove,
save/load, edge shapes. Synthetic clustered data, D=64; self-contained (no conftest)."""
from __future__ import annotations

import threading

import faiss  # noqa: F401  (listed in requirements.txt: a missing faiss is a failure)
import numpy as np
import pytest
import torch

from core.library.ann import (EXACT_MAX_ROWS, IVFSQ_MIN_ROWS, FaissIndex, build_index, choose_kind,
                              load_index)

D = 64
N = 8_000
BASE_ID = 2**40 + 3  # ids well past int32, spaced by 7: never positions


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Clustered anisotropic rows; queries shifted off the data (a modality-gap offset)."""
    rng = np.random.default_rng(0)
    scale = (1.0 / np.arange(1, D + 1) ** 0.8).astype(np.float32)
    centres = rng.standard_normal((200, D)) * scale
    sizes = rng.zipf(1.5, 200).clip(max=200).astype(float)
    which = rng.choice(200, N, p=sizes / sizes.sum())
    rows = _normalise(centres[which] + 0.5 * rng.standard_normal((N, D)) * scale)
    gap = rng.standard_normal(D) * scale
    qwhich = rng.choice(200, 100, p=sizes / sizes.sum())
    queries = _normalise(centres[qwhich] + 0.6 * rng.standard_normal((100, D)) * scale + gap)
    ids = BASE_ID + 7 * np.arange(N, dtype=np.int64)
    return torch.from_numpy(ids), torch.from_numpy(rows), torch.from_numpy(queries)


def _rerank_for(ids: torch.Tensor, rows: torch.Tensor):
    position = {int(i): r for r, i in enumerate(ids.tolist())}
    return lambda wanted: rows[[position[int(i)] for i in wanted]].numpy()


def _build(kind: str, ids, rows, **opts):
    if kind in ("ivfpq", "ivfsq"):
        opts.setdefault("rerank", _rerank_for(ids, rows))
    return build_index(kind, D, ids, rows, **opts)


@pytest.fixture(scope="module", params=["ivf", "hnsw", "ivfpq", "ivfsq"])
def built(request, data):
    ids, rows, _ = data
    return request.param, _build(request.param, ids, rows)


def _exact_top(ids, rows, queries, k):
    return ids[(queries @ rows.T).topk(k, dim=1).indices]


def test_recall_at_10_against_brute_force(built, data):
    kind, index = built
    ids, rows, queries = data
    _, found = index.search(queries, 10)
    truth = _exact_top(ids, rows, queries, 10)
    recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.9, f"{kind} recall@10 {recall:.3f}"


def test_scores_are_cosines_best_first_and_ids_are_the_callers(built, data):
    _, index = built
    ids, rows, queries = data
    scores, found = index.search(queries[:5], 10)
    assert scores.dtype == torch.float32 and found.dtype == torch.int64
    assert torch.all(scores[:, :-1] >= scores[:, 1:] - 1e-5)
    assert set(found.flatten().tolist()) <= set(ids.tolist())
    position = {int(i): r for r, i in enumerate(ids.tolist())}
    exact = (rows[[position[int(i)] for i in found[0]]] @ queries[0])
    if index.kind != "ivfpq":  # ivfpq without rerank would be approximate; here it reranks
        assert torch.allclose(scores[0], exact, atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq", "ivfsq"])
def test_add_remove_save_load(kind, data, tmp_path):
    ids, rows, _ = data
    index = _build(kind, ids[:6000], rows[:6000], rerank=_rerank_for(ids, rows))
    assert len(index) == 6000
    new_ids, new_rows = ids[6000:6100], rows[6000:6100]
    index.add(new_ids, new_rows)
    assert len(index) == 6100
    _, found = index.search(new_rows, 1)
    # a new row is its own nearest neighbour; PQ candidates can miss one among near-twins
    least = 1.0 if kind != "ivfpq" else 0.95
    assert (found[:, 0] == new_ids).float().mean() >= least

    gone = ids[:50]
    index.remove(gone)
    index.remove(torch.tensor([5, 12]))  # unknown ids are ignored
    assert len(index) == 6050
    _, found = index.search(rows[:50], 20)  # the removed vectors themselves as queries
    assert not set(found.flatten().tolist()) & set(gone.tolist())

    index.meta = {"generation": 3, "max_id": int(ids[6099])}
    path = tmp_path / f"{kind}.ann"
    index.save(path)
    again = load_index(path, rerank=_rerank_for(ids, rows))
    assert (again.kind, len(again), again.meta) == (kind, 6050, index.meta)
    s1, i1 = index.search(rows[100:130], 10)
    s2, i2 = again.search(rows[100:130], 10)
    assert torch.equal(i1, i2) and torch.equal(s1, s2)
    assert list(tmp_path.iterdir()) == [path], "no temp file left behind"


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq", "ivfsq"])
def test_empty_and_small_indexes(kind, data):
    ids, rows, queries = data
    index = _build(kind, ids[:3000], rows[:3000], rerank=_rerank_for(ids, rows))
    index.remove(ids[:3000])
    assert len(index) == 0
    scores, found = index.search(queries[:4], 10)
    assert scores.shape == (4, 0) and found.shape == (4, 0)

    index.add(ids[3000:3003], rows[3000:3003])
    scores, found = index.search(queries[:4], 10)  # k larger than the live rows
    assert found.shape[0] == 4 and 1 <= found.shape[1] <= 3
    assert set(found[found >= 0].tolist()) <= set(ids[3000:3003].tolist())
    assert torch.all(torch.isinf(scores[found < 0]))


def test_hnsw_refuses_readding_a_removed_id_and_asks_for_rebuild(data):
    ids, rows, _ = data
    index = _build("hnsw", ids[:1000], rows[:1000])
    index.remove(ids[:100])
    assert not index.rebuild_needed()
    with pytest.raises(ValueError, match="rebuild"):
        index.add(ids[:1], rows[:1])
    index.remove(ids[100:300])
    assert index.rebuild_needed()


def test_nprobe_and_ef_search_are_settable(data):
    ids, rows, queries = data
    ivf = _build("ivf", ids, rows, nprobe=1)
    _, low = ivf.search(queries, 10)
    ivf.nprobe = 64
    _, high = ivf.search(queries, 10)
    truth = _exact_top(ids, rows, queries, 10)
    overlap = lambda found: sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    assert overlap(high) > overlap(low)
    hnsw = _build("hnsw", ids[:2000], rows[:2000], ef_search=16)
    hnsw.ef_search = 128
    assert hnsw.search(queries, 10)[1].shape == (100, 10)


def test_concurrent_searches_while_adding(data):
    ids, rows, queries = data
    index = _build("ivf", ids[:4000], rows[:4000])
    errors = []

    def searcher():
        try:
            for _ in range(20):
                assert index.search(queries[:8], 10)[1].shape[0] == 8
        except Exception as exc:  # noqa: BLE001 - reported through the list below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(4000, N, 500):
        index.add(ids[start:start + 500], rows[start:start + 500])
    for t in threads:
        t.join()
    assert not errors and len(index) == N


def test_kind_choice_and_errors(data):
    ids, rows, _ = data
    assert choose_kind(EXACT_MAX_ROWS - 1) == "exact"
    assert choose_kind(EXACT_MAX_ROWS) == "ivf"
    assert choose_kind(IVFSQ_MIN_ROWS - 1) == "ivf" and choose_kind(IVFSQ_MIN_ROWS) == "ivfsq"
    with pytest.raises(ValueError, match="core.library.search"):
        build_index("exact", D, ids, rows)
    with pytest.raises(ValueError, match="available"):
        build_index("annoy", D, ids, rows)
    index = _build("ivf", ids[:2000], rows[:2000])
    with pytest.raises(ValueError, match=r"\[N, 64\]"):
        index.add(ids[:1], torch.zeros(1, 32))
    assert isinstance(index, FaissIndex)


def test_ivfsq_with_many_cells_finds_them_through_a_graph(data, tmp_path):
    """coarse="hnsw": the coarse quantizer is an HNSW graph (adding 10M rows to 4096 flat
    centroids dominates a 2-core build); it still finds the neighbours here, and a saved index
    reopens with its graph. The default stays flat (better recall at 1M rows)."""
    import faiss
    from core.library.ann import HNSW_COARSE_MIN_NLIST
    ids, rows, queries = data
    index = _build("ivfsq", ids, rows, nlist=HNSW_COARSE_MIN_NLIST, nprobe=512, coarse="hnsw")
    assert isinstance(faiss.downcast_index(index._cpu_index.quantizer), faiss.IndexHNSWFlat)
    flat = _build("ivfsq", ids[:3000], rows[:3000], nlist=HNSW_COARSE_MIN_NLIST)
    assert isinstance(faiss.downcast_index(flat._cpu_index.quantizer), faiss.IndexFlatIP)
    _, found = index.search(queries, 10)
    truth = _exact_top(ids, rows, queries, 10)
    assert np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]) >= 0.9
    index.save(tmp_path / "sq.ann")
    again = load_index(tmp_path / "sq.ann", rerank=_rerank_for(ids, rows))
    assert torch.equal(again.search(queries[:8], 10)[1], found[:8])
