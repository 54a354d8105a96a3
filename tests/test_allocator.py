import torch

from pinn_lsr.allocator import heap_free_bytes, resident_bytes, retain_freed_memory


def test_retain_freed_memory_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert first  # the project's machines use glibc


def test_freed_memory_stays_resident_and_is_counted_as_free():
    retain_freed_memory()
    block = torch.ones(25_000_000)  # 100 MB, below the 1 GiB mmap threshold: from the heap
    resident, free = resident_bytes(), heap_free_bytes()
    del block
    assert resident_bytes() >= resident - 10_000_000  # kept, not returned to the system
    assert heap_free_bytes() >= free + 90_000_000
