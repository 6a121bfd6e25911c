"""Run independent models' work side by side on CPU (trainer.concurrent_models): two worker
threads, each with half of torch's intra-op threads.

A PPO minibatch is small (16 sequences of the bench config: ~700 tokens), and so are its
matmuls: two threads on one (700 x 256) @ (256 x 768) product spend a good part of their time
synchronising. Running the policy's forward, backward and optimizer step on one core and the
critic's on the other keeps each core on whole operations. torch releases the GIL inside every
op and a CPU backward runs on its calling thread, so the Python threads overlap. Measured on the
bench config (2 cores, 3 interleaved rounds): the update 7-14% faster, the iteration 5-11%.
The scoring forwards stay one model at a time: with the whole rollout (64 sequences) their
matmuls scale to 2 threads already, and 3 forwards on 2 single-threaded workers were slower.
"""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache
from typing import Any

import torch

WORKERS = 2


class ModelThreads:
    """A fixed pool of WORKERS threads that each run torch ops on `threads_each` intra-op threads."""

    def __init__(self, threads_each: int = 1):
        main_threads = torch.get_num_threads()
        ready = threading.Barrier(WORKERS + 1)

        def own_thread_count() -> None:
            # set_num_threads also sets the count a thread adopts on its first parallel op, and
            # get_num_threads is that first op: the worker keeps its count after the main thread
            # restores its own below.
            torch.set_num_threads(threads_each)
            torch.get_num_threads()
            ready.wait()

        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="rlhand-model", initializer=own_thread_count)
        for _ in range(WORKERS):  # start every worker now, not on first use
            self._pool.submit(lambda: None)
        ready.wait()
        torch.set_num_threads(main_threads)

    def run(self, *jobs: Callable[[], Any]) -> list[Any]:
        """Run the zero-argument `jobs` on the workers, under the caller's grad mode and CPU
        autocast (both are per thread in torch); their results in order. The first error is raised
        here once every job has finished, so none is left running on shared state."""
        grad = torch.is_grad_enabled()
        autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

        def in_callers_mode(job: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]):
                    return job()

            return run

        futures = [self._pool.submit(in_callers_mode(job)) for job in jobs]
        wait(futures)
        return [future.result() for future in futures]  # re-raises the first job's error


@lru_cache(maxsize=None)
def shared_model_threads(threads_each: int) -> ModelThreads:
    """One pool per thread count for the whole process (trainers in one process share it)."""
    return ModelThreads(threads_each)
