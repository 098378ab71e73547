"""The compact memory bank (per-slot means) against the FULL published bank (a FIFO deque of M slots of K
raw features per class) from `reference_larvseg.py`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference_larvseg import FullMemoryBank

from larvseg_hf.memory_bank_larvseg import LarvSegMemoryBank

NUM_CLASSES, DIM, SIZE, TOPK = 5, 16, 4, 3

# One list of class ids per enqueue call, rows in pair order:
# - call 0: three writes to class 2 in one call, interleaved with others;
# - call 1: six writes (> M = 4) to class 3 in one call, and class 2 wraps around;
# - call 2: class 2 wraps again with several writes, class 0 and 3 advance; call 3: nothing.
CALLS = [[2, 0, 2, 2, 1], [3, 3, 2, 3, 3, 3, 3], [2, 2, 0, 3, 2, 1, 2], []]


def full_means(bank: FullMemoryBank) -> torch.Tensor:
    rows = []
    for c in range(NUM_CLASSES):
        stored = bank.stored(c)
        rows.append(torch.stack(stored).mean(0) if stored else torch.zeros(DIM, dtype=torch.float64))
    return torch.stack(rows)


def replay(dtype: str, seed: int = 0):
    """Yield (compact, full) after each call of CALLS, both fed the same raw top-K features. Slots hold
    1..TOPK features (an image with fewer real pixels than K gives fewer), so the class mean must weigh
    the slots by their counts to equal the mean over every stored feature."""
    g = torch.Generator().manual_seed(seed)
    compact = LarvSegMemoryBank(NUM_CLASSES, DIM, SIZE, warmup=1, dtype=dtype)
    full = FullMemoryBank(NUM_CLASSES, SIZE, warmup=1)
    for call, ids in enumerate(CALLS):
        raw = F.normalize(torch.randn(len(ids), TOPK, DIM, generator=g, dtype=torch.float64), dim=-1)
        counts = torch.tensor([1 + (call + row) % TOPK for row in range(len(ids))])
        for class_id, features, count in zip(ids, raw, counts.tolist(), strict=True):
            full.enqueue(class_id, features[:count])
        used = (torch.arange(TOPK)[None, :] < counts[:, None]).double()
        means = (raw * used[..., None]).sum(1) / counts[:, None].double().clamp(min=1)
        compact.enqueue(torch.tensor(ids, dtype=torch.long), means.float(), counts)
        yield compact, full


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_class_means_and_scores_match_full_fifo_bank(dtype, tol):
    g = torch.Generator().manual_seed(1)
    queries = F.normalize(torch.randn(6, DIM, generator=g, dtype=torch.float64), dim=-1)
    every = torch.arange(NUM_CLASSES)
    for compact, full in replay(dtype):
        assert compact.num_writes.tolist() == full.writes
        means = compact.class_means(every)
        assert means.dtype == torch.float32
        torch.testing.assert_close(means.double(), full_means(full), atol=tol, rtol=0)
        # Mean cosine over every stored feature == one dot product with the class mean.
        scores = queries @ means.double().T
        for c in range(NUM_CLASSES):
            if full.stored(c):
                expected = torch.tensor([full.mean_cosine(c, q) for q in queries], dtype=torch.float64)
                torch.testing.assert_close(scores[:, c], expected, atol=tol, rtol=0)
    # The sequence really exercised the FIFO: class 3 took 6 + 1 writes, class 2 took 3 + 1 + 4.
    assert full.writes == [2, 2, 8, 7, 0]
    assert compact.slots.dtype == {"float32": torch.float32, "float16": torch.float16}[dtype]


def test_more_than_size_writes_in_one_call_keep_the_last_ones():
    g = torch.Generator().manual_seed(2)
    compact = LarvSegMemoryBank(2, DIM, SIZE, warmup=1, dtype="float32")
    rows = torch.randn(SIZE + 3, DIM, generator=g)
    compact.enqueue(torch.ones(SIZE + 3, dtype=torch.long), rows)
    torch.testing.assert_close(
        compact.class_means(torch.tensor([1]))[0], rows[-SIZE:].mean(0), atol=1e-6, rtol=0
    )
    assert compact.num_writes.tolist() == [0, SIZE + 3]
    assert torch.equal(compact.class_means(torch.tensor([0])), torch.zeros(1, DIM))  # untouched, empty


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_usable_follows_warmup(warmup):
    size = 3
    compact = LarvSegMemoryBank(6, 4, size, warmup=warmup, dtype="float32")
    full = FullMemoryBank(6, size, warmup=warmup)
    writes = [0, 1, 2, 3, 5, 6]
    for class_id, count in enumerate(writes):
        for _ in range(count):
            full.enqueue(class_id, torch.ones(2, 4))
        if count:
            compact.enqueue(torch.full((count,), class_id), torch.ones(count, 4))
    usable = compact.usable(torch.arange(6)).tolist()
    assert usable == [full.usable(c) for c in range(6)]
    assert usable == [n >= max(warmup * size, 1) for n in writes]
    assert sum(usable) == {0: 5, 1: 3, 2: 1}[warmup]


def test_state_dict_round_trip():
    *_, (compact, _) = replay("float16")
    state = compact.state_dict()
    assert set(state) == {
        "slots",
        "slot_counts",
        "num_writes",
    }  # persistent buffers: checkpoints carry the bank
    fresh = LarvSegMemoryBank(NUM_CLASSES, DIM, SIZE, warmup=1, dtype="float16")
    assert not torch.equal(
        fresh.class_means(torch.arange(NUM_CLASSES)), compact.class_means(torch.arange(NUM_CLASSES))
    )
    fresh.load_state_dict(state)
    every = torch.arange(NUM_CLASSES)
    assert torch.equal(fresh.class_means(every), compact.class_means(every))
    assert torch.equal(fresh.usable(every), compact.usable(every))
    # Same ring positions: the next writes land identically.
    ids, rows = torch.tensor([0, 2, 2, 4]), torch.randn(4, DIM, generator=torch.Generator().manual_seed(3))
    fresh.enqueue(ids, rows)
    compact.enqueue(ids, rows)
    assert torch.equal(fresh.slots, compact.slots) and torch.equal(fresh.num_writes, compact.num_writes)
    assert torch.equal(fresh.slot_counts, compact.slot_counts)


def test_a_checkpoint_without_slot_counts_loads_with_equal_slot_weights():
    """Banks saved before slot counts existed were scored with equal slot weights; they load that way."""
    *_, (compact, _) = replay("float32")
    state = {k: v for k, v in compact.state_dict().items() if k != "slot_counts"}
    old = LarvSegMemoryBank(NUM_CLASSES, DIM, SIZE, warmup=1, dtype="float32")
    old.load_state_dict(state, strict=False)
    filled = compact.num_writes.clamp(max=SIZE).clamp(min=1).float()
    every = torch.arange(NUM_CLASSES)
    torch.testing.assert_close(old.class_means(every), compact.slots.float().sum(1) / filled[:, None])


def test_enqueue_detaches_and_accepts_empty_calls():
    compact = LarvSegMemoryBank(3, 4, 2, dtype="float32")
    rows = torch.randn(2, 4, requires_grad=True)
    compact.enqueue(torch.tensor([1, 1]), rows * 2)
    compact.enqueue(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert not compact.slots.requires_grad and compact.num_writes.tolist() == [0, 2, 0]


def test_21k_vocabulary_bank_fits_in_one_gib():
    num_classes, dim, size, topk = 21841, 768, 20, 20
    with torch.device("meta"):
        bank = LarvSegMemoryBank(num_classes, dim, size, dtype="float16")
    assert bank.slots.is_meta and bank.slots.shape == (num_classes, size, dim)
    compact_bytes = sum(b.numel() * b.element_size() for b in bank.buffers())
    published_bytes = num_classes * size * topk * dim * 4  # N x M x K x d float32
    assert compact_bytes < 2**30
    assert round(published_bytes / 1e9, 1) == 26.8
    assert published_bytes / compact_bytes > 39
