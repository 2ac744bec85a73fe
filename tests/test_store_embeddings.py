"""Embeddings: the offline multilingual default, the Chroma registration, token counting."""
from __future__ import annotations

import numpy as np
import pytest

from roleplay.errors import ConfigError
from roleplay.store import get_embedder
from roleplay.store.client import forget_client, get_client
from roleplay.store.embeddings import RoleplayEmbeddingFunction, embedding_function
from roleplay.tokens import approx_tokens


def test_use_embedder_is_cached_normalised_and_multilingual():
    emb = get_embedder("use")
    assert get_embedder("use") is emb and emb.dim == 512 and emb.name
    v = emb.embed(["The detective lit his pipe.", "侦探点燃了他的烟斗。", "The stock market fell sharply today.", ""])
    assert v.shape == (4, 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-4)
    # zh and en of the same sentence are closer than two unrelated English sentences
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert emb.embed([]).shape == (0, 512)


def test_bad_embedder_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not 'use' and not a folder"):
        get_embedder("no-such-model")
    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError) as err:
        get_embedder(str(tmp_path / "model"))
    # either the optional extra is missing (and named) or the folder is not a model
    assert "roleplay[st]" in str(err.value) or "cannot load" in str(err.value)


def test_embedding_function_round_trips_through_chroma_config(settings):
    ef = embedding_function("use")
    assert isinstance(ef, RoleplayEmbeddingFunction) and ef.name() == "roleplay"
    rebuilt = type(ef).build_from_config(ef.get_config())
    assert rebuilt.get_config() == {"spec": "use"}
    out = ef(["hello", "你好"])
    assert len(out) == 2 and len(out[0]) == 512

    from chromadb.utils.embedding_functions import known_embedding_functions

    assert known_embedding_functions["roleplay"] is type(ef)
    client = get_client(settings)
    client.create_collection("probe", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})
    forget_client(settings)
    # Reopened without passing a function: Chroma rebuilds ours from the stored config
    # (no download of its default model), so adding raw documents embeds them with USE.
    col = get_client(settings).get_collection("probe")
    col.add(ids=["a"], documents=["The detective lit his pipe."])
    got = col.get(ids=["a"], include=["embeddings"])["embeddings"][0]
    expected = get_embedder("use").embed(["The detective lit his pipe."])[0]
    assert np.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("text,expected", [
    ("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("你好世界", 4), ("你好 world", 4),
    ("（皱眉）", 4), ("Sherlock:「(leans back) I observed.」", 11),
])
def test_approx_tokens(text, expected):
    assert approx_tokens(text) == expected
