"""The TAL initialization service: a FastAPI worker that serves predicted initial weights.

``service.main:create_app`` builds the application; ``tal serve`` runs it under uvicorn.
"""

import os

# Both are read when torch loads, so they are set here, before anything in the package imports
# torch. Huge-page backed CPU tensors make predictions about 1.5x faster (docs/benchmarks.md).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# A worker shares its cores with its event loop, the sends of hits and other workers: OpenMP
# threads that spin while they wait for each other then lose their turns. With another process
# busy on one of our 2 cores, a ViT-B prediction on 2 threads took 0.70-1.80 s spinning (the
# default) and 0.22-0.26 s sleeping (docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
