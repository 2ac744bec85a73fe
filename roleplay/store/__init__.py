"""Retrieval: embeddings, the Chroma line store, BM25, hybrid search and the lorebook.

Public API: `Retriever`, `RetrievedStory`, `LoreHit`, `get_embedder`, `get_client`.
Nothing heavy (chromadb, the embedding model) is imported or loaded until first used.
"""
from .client import get_client
from .embeddings import Embedder, get_embedder
from .lorebook import LoreHit
from .retriever import RetrievedStory, Retriever

__all__ = ["Embedder", "LoreHit", "RetrievedStory", "Retriever", "get_client", "get_embedder"]
