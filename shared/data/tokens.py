"""Texts -> token ids, on the trusted side (shared.data.encoders for the contract): a tokenizer
trained with the `tokenizers` library on each seed's training split only (WordPiece or BPE,
`data.vocab_size`), or the user's tokenizer.json (`data.tokenizer`, a path under the data directory).

What a model receives is the same either way: (N, max_length) int64 ids with
    0 [PAD]   1 [UNK]   2 [CLS]   3 [SEP]
so a sequence layer's mask is `ids != 0` and a pair's segments are told apart by [SEP] (= 3):
`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, cut longest-first to max_length, padded with 0. A user
tokenizer whose special tokens have other ids is remapped (its ids permuted, none lost).

Fitting costs seconds on a large set and an evaluator runs many jobs of one seed: fitted
tokenizers are kept in memory, keyed by exactly what they were fitted on.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from shared.errors import DatasetError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # their ids in what models receive: 0, 1, 2, 3
# a user tokenizer's own names for them (BERT's, RoBERTa's/GPT's, T5's ...), tried in order
_SPELLINGS = {"[PAD]": ("[PAD]", "<pad>", "<|pad|>"), "[UNK]": ("[UNK]", "<unk>", "<|unk|>"),
              "[CLS]": ("[CLS]", "<s>", "<cls>", "[BOS]", "<bos>", "<|startoftext|>"),
              "[SEP]": ("[SEP]", "</s>", "<sep>", "[EOS]", "<eos>", "<|endoftext|>")}
TRAINED = ("wordpiece", "bpe")
_STATS_SAMPLE = 20_000  # texts whose lengths the facts count (evenly spaced): enough for a p95
_fitted: OrderedDict[tuple, FittedText] = OrderedDict()  # (what was fitted on, settings) -> fitted
_KEEP = 16  # fitted tokenizers kept: an evaluator's seeds of a few runs
_lock = threading.Lock()  # an evaluator's jobs run in threads: the cache's order is changed under it


def texts_digest(x: np.ndarray) -> str:
    """sha256 of texts (N,) or pairs (N, 2), unambiguously separated."""
    h = hashlib.sha256()
    for v in x.ravel():
        h.update(str(v).encode("utf-8", "surrogatepass") + b"\x1f")
    return h.hexdigest()


def _train(kind: str, texts: list[str], vocab_size: int) -> Tokenizer:
    """A WordPiece (BERT's: lower-cased, split on whitespace and punctuation) or byte-level BPE
    (GPT-2's: every byte has a token, so no [UNK]) tokenizer trained on `texts`, ids 0-3 the specials.
    BPE's training is deterministic: the same texts give the same tokenizer. WordPiece's trainer
    breaks ties between pieces in a hash map's random order, so a retrained one may differ (the
    record's sha256 tells); its ids are at least numbered in one canonical order."""
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if kind == "wordpiece":  # numbered in one order, not its trainer's hash map's
        vocab = tok.get_vocab()
        order = sorted(set(vocab) - set(SPECIALS), key=lambda t: (len(t.removeprefix("##")), t.startswith("##"), t))
        tok.model = models.WordPiece(vocab={t: i for i, t in enumerate([*SPECIALS, *order])}, unk_token="[UNK]")
    return tok


def user_tokenizer(path: Path) -> tuple[Tokenizer, np.ndarray | None]:
    """The tokenizer.json at `path`, its missing special tokens added, and the permutation of its ids
    (None when it needs none) that puts [PAD], [UNK], [CLS], [SEP] at 0-3."""
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the library raises a bare Exception for a malformed file
        raise DatasetError(f"{path}: not a tokenizer.json the tokenizers library reads ({exc}); save one with "
                           "Tokenizer.save(path), or set data.tokenizer to wordpiece or bpe") from exc
    vocab = tok.get_vocab(with_added_tokens=True)
    found = {role: next((s for s in _SPELLINGS[role] if s in vocab), None) for role in SPECIALS}
    tok.add_special_tokens([role for role, s in found.items() if s is None])  # appended after the vocabulary
    vocab = tok.get_vocab(with_added_tokens=True)
    old = [vocab[found[role] or role] for role in SPECIALS]
    if old == [0, 1, 2, 3]:
        return _frame(tok, [found[r] or r for r in SPECIALS]), None
    order = old + [i for i in range(tok.get_vocab_size(with_added_tokens=True)) if i not in set(old)]
    perm = np.empty(len(order), dtype=np.int64)
    perm[order] = np.arange(len(order))  # old id order[k] -> k
    return _frame(tok, [found[r] or r for r in SPECIALS]), perm


def _frame(tok: Tokenizer, names: list[str]) -> Tokenizer:
    """`tok` set to add [CLS]/[SEP] as the template says (in its own spelling and ids): no truncation
    or padding here, which `FittedText.transform` sets per call."""
    cls, sep = names[2], names[3]
    tok.post_processor = TemplateProcessing(single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                                            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return tok


class FittedText:
    """A tokenizer fitted (or loaded) for one seed: raw texts -> (N, max_length) int64 ids. Safe to share
    between threads: nothing changes its settings once it is made."""

    def __init__(self, tok: Tokenizer, perm: np.ndarray | None, *, kind: str, max_length: int, pair: bool,
                 text_columns: tuple[str, ...], trained_on: dict[str, Any]) -> None:
        self.tok, self.perm, self.kind, self.max_length, self.pair = tok, perm, kind, max_length, pair
        self.text_columns, self.trained_on = text_columns, trained_on
        self.id_limit = 0  # ids at or above it become [UNK] (TextEncoder.fit sets it; 0: no limit)
        self._json = tok.to_str()  # before the cut and padding are set: what the sha256 and the artifact hold
        self.sha256 = hashlib.sha256(self._json.encode()).hexdigest()
        self._uncut = Tokenizer.from_str(tok.to_str())  # for lengths: a copy, so no call changes another's settings
        pad = tok.id_to_token(int(np.flatnonzero(perm == 0)[0])) if perm is not None else SPECIALS[0]
        tok.enable_truncation(max_length, strategy="longest_first")
        tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad, length=max_length)

    def lengths(self, x: np.ndarray) -> np.ndarray:
        """Each sample's length in tokens, specials counted, before any cut."""
        return np.array([len(e.ids) for e in self._uncut.encode_batch(_inputs(x, self.pair))], dtype=np.int64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        ids = np.array([e.ids for e in self.tok.encode_batch(_inputs(x, self.pair))], dtype=np.int64)
        ids = ids.reshape(len(x), self.max_length)  # (N, L) also for N = 0
        ids = self.perm[ids] if self.perm is not None else ids
        # the models' embeddings hold id_limit rows (the facts' vocab_size, the pool's tokenizer's size): a
        # piece this seed's tokenizer has beyond them (rare: it saw fewer texts than the pool's) is unknown
        return np.where(ids < self.id_limit, ids, SPECIALS.index("[UNK]")) if self.id_limit else ids

    def artifact(self) -> dict[str, str]:
        """The tokenizer itself, for the trained weights of the seed that fitted it (their safetensors
        metadata: shared.evaluation.weights.with_metadata), so an exported model tokenises new texts exactly
        as it was trained: a retrained WordPiece tokenizer may differ. `from_artifact` reads it back."""
        perm = json.dumps(self.perm.tolist()) if self.perm is not None else ""
        return {"tokenizer.json": self._json, "id_permutation": perm}

    @classmethod
    def from_artifact(cls, metadata: dict[str, str], record: dict[str, Any]) -> FittedText:
        """The tokenizer `artifact` wrote, set as `record` (its Preprocessing.encoding) says."""
        perm = np.array(json.loads(metadata["id_permutation"]), dtype=np.int64) if metadata.get("id_permutation") else None
        fitted = cls(Tokenizer.from_str(metadata["tokenizer.json"]), perm, kind=record["tokenizer"],
                     max_length=int(record["max_length"]), pair=bool(record["pair"]),
                     text_columns=tuple(record["text_columns"]), trained_on=record.get("trained_on", {}))
        fitted.id_limit = int(record.get("id_limit", 0))
        return fitted

    def record(self) -> dict[str, Any]:
        # vocab_size: this tokenizer's pieces; id_limit: the models' embedding rows (the facts' vocab_size),
        # ids at or above it given as [UNK] (0: none, for the pool's own tokenizer)
        return {"kind": "text", "tokenizer": self.kind, "vocab_size": self.tok.get_vocab_size(with_added_tokens=True),
                "id_limit": self.id_limit, "max_length": self.max_length, "pad_id": 0, "special_ids": dict(zip(SPECIALS, range(4))),
                "pair": self.pair, "text_columns": list(self.text_columns),
                "template": "[CLS] a [SEP] (b [SEP]), cut longest-first to max_length, padded with 0",
                "sha256": self.sha256, "remapped": self.perm is not None, "trained_on": self.trained_on}


def _inputs(x: np.ndarray, pair: bool) -> list:
    if pair:
        return [(str(a), str(b)) for a, b in x]
    return [str(t) for t in x]


class TextEncoder:
    """Texts (N,) or sentence pairs (N, 2) -> (max_length,) int64 ids (shared.data.encoders.Encoder)."""

    dtype = "int64"

    def __init__(self, *, tokenizer: str, vocab_size: int, max_length: int, pair: bool,
                 text_columns: tuple[str, ...], pool: np.ndarray, user_file: Path | None = None,
                 notes: tuple[str, ...] = ()) -> None:
        self.kind = tokenizer if user_file is None else "tokenizer.json"
        self._asked = {"tokenizer": tokenizer, "vocab_size": vocab_size, "max_length": max_length}  # the settings
        self.vocab_size, self.max_length, self.pair = vocab_size, max_length, pair
        self.text_columns, self.user_file, self.notes = text_columns, user_file, notes
        self._pool = pool  # what the facts' lengths are counted on (never the labels, never a test split)
        self._facts: dict[str, Any] | None = None
        # The models' shape follows the data, within the settings: a tokenizer fitted on the pool (its inputs
        # only) gives the vocabulary's size where the texts hold fewer pieces than data.vocab_size, and the
        # longest sample (rounded up to 8) the length where the texts are shorter than data.max_length; so a
        # set of short reviews does not train embeddings of 8,000 rows and recurrences over 128 steps of padding
        pooled = self.fit(pool)
        self.vocab_size = pooled.tok.get_vocab_size(with_added_tokens=True)
        self._lengths = pooled.lengths(pool[np.linspace(0, len(pool) - 1, _STATS_SAMPLE).astype(int)]
                                       if len(pool) > _STATS_SAMPLE else pool)
        self.max_length = min(max_length, max(8, -(-int(self._lengths.max(initial=1)) // 8) * 8))
        self.output_shape = (self.max_length,)

    @functools.cached_property
    def settings(self) -> str:
        """The settings this encoding follows (not what it measured): the planner's and an evaluator's must
        match, or the evaluator would train with another tokenizer than the one the facts describe."""
        which = (f"tokenizer.json sha256 {hashlib.sha256(self.user_file.read_bytes()).hexdigest()[:16]}"
                 if self.user_file else self._asked["tokenizer"])
        return f"{which}, vocab_size {self._asked['vocab_size']}, max_length {self._asked['max_length']}"

    def for_pool(self, pool: np.ndarray) -> TextEncoder:
        """This encoding with its shape and facts taken from `pool` (the rows left once a test split is held
        out of them: shared.data.splits.with_test_split), so no test text shapes the models' inputs."""
        return TextEncoder(**self._asked, pair=self.pair, text_columns=self.text_columns, pool=pool,
                           user_file=self.user_file, notes=self.notes)

    def sized(self, input_shape: list[int], vocab_size: int) -> TextEncoder:
        """This encoding producing exactly `input_shape` (L,) and ids below `vocab_size`: the planner's facts,
        which a job carries (EvalJob.input_shape). A tokenizer fitted in another process may count the pool's
        pieces and lengths a little differently (WordPiece breaks ties at random); the model was built for
        the planner's."""
        if list(input_shape) == [self.max_length] and vocab_size in (0, self.vocab_size):
            return self
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ValueError(f"text inputs are (max_length,), not {input_shape}")
        out = copy.copy(self)
        out.max_length, out.output_shape = int(input_shape[0]), (int(input_shape[0]),)
        out.vocab_size = vocab_size or self.vocab_size
        return out

    def fit(self, x_train: np.ndarray, y_train: np.ndarray | None = None) -> FittedText:
        digest = hashlib.sha256(self.user_file.read_bytes()).hexdigest() if self.user_file else texts_digest(x_train)
        key = (self.kind, digest, self.vocab_size, self.max_length, self.pair, self.text_columns)
        with _lock:
            if key in _fitted:
                _fitted.move_to_end(key)
                return _fitted[key]
        if self.user_file is not None:
            tok, perm = user_tokenizer(self.user_file)
            trained_on = {"file": self.user_file.name, "file_sha256": digest}
        else:
            texts = [str(t) for t in x_train.ravel()]  # both segments of a pair
            tok, perm = _frame(_train(self.kind, texts, self.vocab_size), list(SPECIALS)), None
            trained_on = {"texts": int(len(x_train)), "texts_sha256": digest,
                          "split": "this seed's training split only"}
        fitted = FittedText(tok, perm, kind=self.kind, max_length=self.max_length, pair=self.pair,
                            text_columns=self.text_columns, trained_on=trained_on)
        fitted.id_limit = self.vocab_size if x_train is not self._pool else 0
        with _lock:  # fitted outside it: two seeds' tokenizers train at once
            _fitted[key] = fitted
            while len(_fitted) > _KEEP:
                _fitted.popitem(last=False)
        return fitted

    def facts(self) -> dict[str, Any]:
        """input_dtype, TextFacts (the lengths counted on the pool by a tokenizer fitted on it: inputs
        only, no labels) and a note on how the ids are laid out."""
        if self._facts is None:
            from shared.messaging.messages import TextFacts

            n = self._lengths
            where = (f"{self.kind} trained on each seed's training split"
                     if self.user_file is None else f"{self.user_file.name} (the user's tokenizer.json)")
            text = TextFacts(tokenizer=where, vocab_size=self.vocab_size, max_length=self.max_length, pair=self.pair,
                             text_columns=list(self.text_columns), mean_length=round(float(n.mean()), 1),
                             median_length=float(np.median(n)), p95_length=float(np.percentile(n, 95)),
                             longest=int(n.max()), truncated_share=round(float((n > self.max_length).mean()), 4))
            note = ("inputs are int64 token ids (N, max_length): 0 [PAD], 1 [UNK], 2 [CLS], 3 [SEP]; the mask is "
                    "ids != 0" + ("; two segments: [CLS] a [SEP] b [SEP]" if self.pair else ""))
            self._facts = {"input_dtype": "int64", "text": text, "notes": [*self.notes, note],
                           "encoding_settings": self.settings}
        return self._facts
