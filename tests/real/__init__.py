"""Tests against the real Qwen2.5-Coder-0.5B-Instruct GGUF (marker `real_model`)."""
