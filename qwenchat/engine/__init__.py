"""The qwenchat engine: a PyTorch implementation of the Qwen2 architecture.

Contract: the engine takes local paths (an HF-format model directory), never repo ids; it knows
nothing about storage, the Hub or the UI, and imports nothing else from qwenchat. Its public
entry point is `qwenchat.engine.chat.ChatEngine`. Submodules import torch, so this package
file stays empty of imports to keep `import qwenchat.engine.errors` cheap.
"""
