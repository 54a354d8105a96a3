from pinn_lsr.lsr.allocator import retain_freed_memory


def test_retain_freed_memory_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert first  # the project's machines use glibc
