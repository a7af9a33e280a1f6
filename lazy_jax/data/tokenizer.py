"""SentencePiece tokenizer with T5's extra ids, and training one on a local corpus.

Ids follow T5: pad 0, eos 1, unk 2, then the model's pieces, then `extra_ids`
sentinels appended after them (T5's <extra_id_0> is the highest id,
`vocab_size - 1`). The real T5 vocabulary (32000 pieces + 100 extra ids = 32100;
the model pads its embedding to 32128) works when its .model file is reachable;
offline, `train_sentencepiece` builds a unigram model of the same layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm
from etils import epath

from lazy_jax.data import cache
from lazy_jax.errors import InputError

DEFAULT_EXTRA_IDS = 100
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_LOADED = cache.BoundedCache("tokenizer.models", max_entries=4)


class SentencePieceTokenizer:
    """Text <-> int32 ids with `extra_ids` sentinels at the top of the vocabulary."""

    def __init__(self, path: str, extra_ids: int = DEFAULT_EXTRA_IDS):
        path = os.fspath(path)
        model_file = epath.Path(path)  # a gs:// data dir holds the pydocs model too
        if not model_file.is_file():
            raise InputError(f"SentencePiece model file not found: {path!r}")
        proto = model_file.read_bytes()
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError variants.
            raise InputError(f"cannot read SentencePiece model {path!r}: {e}") from e
        if (processor.pad_id(), processor.eos_id()) != (PAD_ID, EOS_ID):
            raise InputError(
                f"SentencePiece model {path!r} has pad id {processor.pad_id()} and eos id "
                f"{processor.eos_id()}; T5 span corruption needs pad=0 and eos=1"
            )
        if extra_ids < 1:
            raise InputError(f"extra_ids must be >= 1 for span corruption, got {extra_ids}")
        self.path = path
        self.extra_ids = extra_ids
        self._processor = processor

    @property
    def num_pieces(self) -> int:
        """Ids below this are SentencePiece pieces; ids at or above are sentinels."""
        return self._processor.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return self.num_pieces + self.extra_ids

    def sentinel_id(self, i: int) -> int:
        """Id of <extra_id_i>."""
        if not 0 <= i < self.extra_ids:
            raise ValueError(f"sentinel index must be in [0, {self.extra_ids}), got {i}")
        return self.vocab_size - 1 - i

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._processor.EncodeAsIds(text), np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, np.int32) for ids in self._processor.EncodeAsIds(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; stops at EOS, drops pad, writes sentinels as <extra_id_i>."""
        pieces, run = [], []
        for i in (int(x) for x in ids):
            if i == EOS_ID:
                break
            if i == PAD_ID:
                continue
            if i >= self.num_pieces:
                pieces.append(self._processor.DecodeIds(run))
                pieces.append(f"<extra_id_{self.vocab_size - 1 - i}>")
                run = []
            else:
                run.append(i)
        pieces.append(self._processor.DecodeIds(run))
        return "".join(pieces)


def load(path: str) -> SentencePieceTokenizer:
    """The model at `path` with DEFAULT_EXTRA_IDS sentinels, read once per process."""
    return _LOADED.get(path, lambda: SentencePieceTokenizer(path))


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """Embedding size the model should use (T5: 32100 -> 32128)."""
    return -(-vocab_size // multiple) * multiple


def train_sentencepiece(
    sentences: Iterable[str], model_path: str, *, vocab_size: int = 4000, max_sentences: int = 200_000
) -> None:
    """Trains a unigram model with T5's special ids (pad 0, eos 1, unk 2, no bos).

    `vocab_size` counts the pieces only; the tokenizer adds the extra ids. Training
    runs single-threaded on at most `max_sentences` sentences (an evenly strided
    subsample, so the result is deterministic) and writes `model_path` atomically.
    """
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise ValueError("no sentences to train a SentencePiece model on")
    stride = max(1, -(-len(sentences) // max_sentences))
    sentences = sentences[::stride]
    model = _BytesSink()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=8192,
        minloglevel=2,
    )
    tmp_path = f"{model_path}.tmp"
    with open(tmp_path, "wb") as f:
        f.write(model.data)
    os.replace(tmp_path, model_path)


class _BytesSink:
    """The `model_writer` SentencePiece wants: an object with write(bytes)."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data
