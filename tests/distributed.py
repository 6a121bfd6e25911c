"""Run a function on N ranks of a real gloo process group (spawned processes, one machine)."""

import os
import socket
import traceback

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args, queue) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from rlhand.distributed import context

    try:
        context.init_from_env()
        queue.put((rank, "ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with this rank's traceback
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        context.shutdown(wait_for_others=False)


def run_ranks(fn, *args, world: int = 2, timeout: float = 600) -> list:
    """fn(*args) on every rank (fn must be importable: a module-level function); the ranks'
    return values, rank 0 first. A rank's exception fails the caller with its traceback."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(rank, world, port, fn, args, queue)) for rank in range(world)]
    for proc in procs:
        proc.start()
    results = {}
    try:
        for _ in range(world):
            rank, status, value = queue.get(timeout=timeout)
            if status == "error":
                raise AssertionError(f"rank {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return [results[rank] for rank in range(world)]
