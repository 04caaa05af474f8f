"""Remote OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, `qwenchat serve`) as a
backend with the engine's surface: `RemoteRef` names one (a model name that is a URL),
`list_models` asks what it offers, `RemoteEngine` chats with it.

This package never imports torch, the store or a face; importing it stays cheap (the `openai`
client is imported when a connection is made).
"""
