"""The model pool and its backends (llama.cpp chat, MiniLM embeddings, later speech)."""
