"""The qwenchat engine: a PyTorch implementation of the Qwen2 architecture.

Contract: the engine takes local paths (an HF-format model directory), never repo ids; it knows
nothing about storage, the Hub or the UI, and imports nothing else from qwenchat. Its public
entry point is `qwenchat.engine.chat.ChatEngine`. Submodules import torch, so this package
file imports nothing but `os` to keep `import qwenchat.engine.errors` cheap.
"""

import os as _os

# libgomp (torch's OpenMP runtime) reads how its idle threads wait once, when torch loads it, so
# this is set here, before any engine module imports torch: short spins, then sleep (see
# threads.py, "Waiting"). A user's own choice wins.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & _os.environ.keys():
    _os.environ["GOMP_SPINCOUNT"] = "1000"
