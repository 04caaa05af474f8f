import pytest

from qwenchat.model_label import short_model


@pytest.mark.parametrize(
    "stored, shown",
    [
        ("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct"),
        ("/home/me/models/Qwen2.5-Coder/", "Qwen2.5-Coder"),
        ("/home/me/models/coder-q8.gguf", "coder-q8"),
        ("C:\\models\\coder.GGUF", "coder"),
        ("http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct", "Qwen2-72B-Instruct @ gpu-box:8000"),
        ("https://api.example.com/v1", "api.example.com"),
        ("http://127.0.0.1:11434/v1#qwen2.5:7b", "qwen2.5:7b @ 127.0.0.1:11434"),
        ("", ""),
        (None, ""),
    ],
)
def test_short_model(stored, shown) -> None:
    assert short_model(stored) == shown
