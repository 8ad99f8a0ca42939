"""Runs learn2learn's own ``examples/rl/maml_trpo.py`` (2D navigation, ``Particles2D-v1``) for a few
meta-iterations and prints ``@@L2L@@ {"seconds": ..., "iterations": ...}``; run by ``benchmarks/meta_rl.py`` in the
learn2learn venv (``/work/shared/tools/setup_learn2learn_venv.sh`` plus ``pip install cherry-rl dotmap six
gym==0.25.2``). Usage: ``python _l2l_maml_trpo_worker.py EXAMPLES_DIR ITERATIONS WORKERS``.

Two compatibility shims, neither touching the algorithm: numpy 2 removed the ``np.bool8`` alias gym 0.25 still
uses, and ``Particles2D-v1`` is asked for the 100-step horizon of the MAML paper (``max_episode_steps=100``;
its episodes still never end under gym 0.25.2, see docs/results.md).
"""

import json
import sys
import time

import numpy as np

np.bool8 = np.bool_
import gym  # noqa: E402

_make = gym.make
gym.make = lambda name, **kw: _make(name, max_episode_steps=100, **kw)
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
import maml_trpo  # noqa: E402

iterations, workers = int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
maml_trpo.main(num_iterations=iterations, num_workers=workers)
print("@@L2L@@ " + json.dumps({"seconds": time.perf_counter() - start, "iterations": iterations}), flush=True)
