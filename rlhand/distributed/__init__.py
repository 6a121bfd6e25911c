"""Several processes on one trainer core: the process group, sharded or replicated models, and
statistics reduced across ranks."""
