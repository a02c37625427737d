"""Texts -> token ids on the trusted side: tokenizers trained by the `tokenizers` library on each
seed's training split only, a user's tokenizer.json saved by it (its special ids remapped), the
cut, the padding, the pairs, the facts and the record."""

import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from shared.data.datasets import load_dataset, split, with_test_split
from shared.data.tokens import TextEncoder
from shared.errors import DatasetError, OutsideDataDirError
from shared.runtime.config import DataConfig

FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def encoder(texts, pair=False, **kwargs) -> TextEncoder:
    settings = {"tokenizer": "wordpiece", "vocab_size": 120, "max_length": 12, **kwargs}
    x = np.array(texts, dtype=object)
    return TextEncoder(pair=pair, text_columns=("a", "b") if pair else ("text",), pool=x, **settings)


CORPUS = [f"the film was {w} and the cast was {v}" for w in ("good", "bad", "dull", "fine") for v in ("great", "poor")] * 5


def test_the_validation_texts_never_shape_the_tokenizer(tmp_path):
    """A seed's split fits on its training rows: a word (and a script) found only in validation
    texts has no token of its own, and characters never seen in training are [UNK]."""
    root = tmp_path / "data"
    (root / "s").mkdir(parents=True)
    texts = [f"a {w} movie" for w in ("good", "bad")] * 30
    Dataset.from_dict({"text": texts, "label": [0, 1] * 30}, features=FEATURES).save_to_disk(str(root / "s"))
    ds = with_test_split(load_dataset("hf:s", data_dir=root, config=DataConfig(vocab_size=100, max_length=8)))
    data = split(ds, 0)
    unseen = np.array(["zzyzx жжж"], dtype=object)
    ids = data.prepare(unseen)[0]
    assert ids.dtype == np.int64 and ids[0] == 2 and ids[1] == 1  # [CLS], then [UNK] for characters never trained on
    vocab = data.fitted.tok.get_vocab()
    assert "zzyzx" not in vocab and "movie" in vocab
    both = encoder(texts + ["zzyzx zzyzx zzyzx"] * 30, vocab_size=100).fit(np.array(texts + ["zzyzx"] * 30, dtype=object))
    assert "zzyzx" in both.tok.get_vocab()  # fitted on texts that hold it, it would have one


def test_padding_the_mask_and_the_cut():
    fitted = encoder(CORPUS).fit(np.array(CORPUS, dtype=object))
    ids = fitted.transform(np.array(["the film was good", " ".join(["good"] * 40), ""], dtype=object))
    assert ids.shape == (3, 12) and ids.dtype == np.int64
    mask = ids != 0
    assert mask[0].sum() == 6 and (ids[0, 6:] == 0).all()  # [CLS] 4 words [SEP], then [PAD]s
    assert mask[1].all() and ids[1, 0] == 2 and ids[1, -1] == 3  # cut to 12, still closed by [SEP]
    assert ids[2, :2].tolist() == [2, 3] and mask[2].sum() == 2
    assert fitted.transform(np.array([], dtype=object)).shape == (0, 12)


def test_pairs_keep_two_segments_cut_longest_first():
    pairs = np.array([[t, t[::-1]] for t in CORPUS], dtype=object)
    fitted = encoder(pairs, pair=True, max_length=16).fit(pairs)
    ids = fitted.transform(np.array([[" ".join(["good"] * 20), "bad"]], dtype=object))[0]
    seps = np.flatnonzero(ids == 3)
    assert len(seps) == 2 and seps[1] == 15  # [CLS] a(12) [SEP] b [SEP] = 16: the long segment was cut
    assert ids[seps[0] + 1:seps[1]].size == 1  # the short one kept whole


def test_fitted_tokenizers_are_kept_and_bpe_trains_too():
    x = np.array(CORPUS, dtype=object)
    enc = encoder(CORPUS)
    assert enc.fit(x) is enc.fit(x.copy())  # the same texts: fitted once
    bpe = encoder(CORPUS, tokenizer="bpe", vocab_size=300).fit(x)
    ids = bpe.transform(np.array(["the film was wonderful 😀"], dtype=object))[0]
    assert ids[0] == 2 and 1 not in ids.tolist()  # byte-level: every character has tokens, no [UNK]
    assert bpe.record()["tokenizer"] == "bpe"


def test_the_record_is_small_and_says_how_to_tokenise():
    fitted = encoder(CORPUS).fit(np.array(CORPUS, dtype=object))
    record = fitted.record()
    assert record["kind"] == "text" and record["max_length"] == 12 and record["pad_id"] == 0
    assert record["special_ids"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    assert len(record["sha256"]) == 64 and record["trained_on"]["texts"] == len(CORPUS)
    assert len(json.dumps(record)) < 2000  # never the vocabulary
    # BPE trained again on the same texts is the same tokenizer (WordPiece's trainer breaks ties at random)
    bpe = [encoder(CORPUS, tokenizer="bpe", vocab_size=300, max_length=n).fit(np.array(CORPUS, dtype=object))
           for n in (12, 13)]
    assert bpe[0] is not bpe[1] and bpe[0].record()["sha256"] == bpe[1].record()["sha256"]


def test_the_facts_count_lengths_on_the_pool():
    texts = ["short one"] * 8 + [" ".join(["long"] * 30)] * 2
    facts = encoder(texts).facts()
    text = facts["text"]
    # the pool's pieces are fewer than data.vocab_size (120): the models' embeddings hold just those
    assert facts["input_dtype"] == "int64" and 4 < text.vocab_size < 120 and text.max_length == 12
    assert text.longest == 32 and text.median_length == 4 and text.truncated_share == 0.2
    assert any("ids != 0" in note for note in facts["notes"])


def test_short_texts_are_padded_to_their_longest_and_no_id_reaches_past_the_vocabulary():
    pool = np.array(CORPUS * 3, dtype=object)
    enc = encoder(list(pool), max_length=128)
    longest = enc.facts()["text"].longest
    assert enc.output_shape == (max(8, -(-longest // 8) * 8),) and enc.max_length < 128  # rounded up to 8, not 128
    seed = enc.fit(pool[::2])  # a seed's training rows: a tokenizer of its own, capped at the pool's size
    ids = seed.transform(np.array(["never seen qqqq words " * 3] + list(pool[1::2]), dtype=object))
    assert ids.shape == (len(pool[1::2]) + 1, enc.max_length) and ids.max() < enc.vocab_size


def roberta_like(path) -> Tokenizer:
    """A tokenizer.json saved by the tokenizers library with RoBERTa's specials: <s> 0, <pad> 1, </s> 2, <unk> 3."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def test_a_users_tokenizer_json_is_remapped_to_the_fixed_special_ids(tmp_path):
    root = tmp_path / "data"
    own = roberta_like(root / "tok" / "tokenizer.json")
    (root / "s").mkdir()
    Dataset.from_dict({"text": CORPUS, "label": [0, 1] * (len(CORPUS) // 2)}, features=FEATURES).save_to_disk(str(root / "s"))
    config = DataConfig(tokenizer="tok/tokenizer.json", max_length=12)
    ds = with_test_split(load_dataset("hf:s", data_dir=root, config=config))
    assert ds.facts().text.vocab_size == own.get_vocab_size() and "tokenizer.json" in ds.facts().text.tokenizer
    data = split(ds, 0)
    ids = data.prepare(np.array(["the film was good", "the film was xylophone"], dtype=object))
    fitted = data.fitted
    back = np.argsort(fitted.perm)  # new id -> the tokenizer's own
    assert ids[0, 0] == 2 and ids[0, 5] == 3 and (ids[0, 6:] == 0).all()
    assert [own.id_to_token(int(i)) for i in back[ids[0, 1:5]]] == ["the", "film", "was", "good"]
    assert ids[1, 4] == 1  # its <unk>, now 1
    assert fitted.record()["remapped"] and fitted.record()["trained_on"]["file"] == "tokenizer.json"


def test_a_tokenizer_outside_the_data_directory_or_unreadable_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "s").mkdir(parents=True)
    Dataset.from_dict({"text": CORPUS[:10], "label": [0, 1] * 5}, features=FEATURES).save_to_disk(str(root / "s"))
    roberta_like(tmp_path / "elsewhere" / "tokenizer.json")
    with pytest.raises(OutsideDataDirError, match="tokenizer file"):
        load_dataset("hf:s", data_dir=root, config=DataConfig(tokenizer="../elsewhere/tokenizer.json"))
    (root / "bad.json").write_text("{\"not\": \"a tokenizer\"}")
    with pytest.raises(DatasetError, match="not a tokenizer.json the tokenizers library reads"):
        load_dataset("hf:s", data_dir=root, config=DataConfig(tokenizer="bad.json"))


def test_a_text_models_ids_reach_it_as_int64_never_scaled():
    import torch

    from researcher.load import BestModel

    fitted = encoder(CORPUS).fit(np.array(CORPUS, dtype=object))
    model = torch.nn.Sequential(torch.nn.Embedding(120, 4), torch.nn.Flatten(), torch.nn.Linear(48, 2)).eval()
    best = BestModel(model=model, seed=0, class_names=["neg", "pos"], input_shape=[12], mean=np.zeros(1, np.float32),
                     std=np.ones(1, np.float32), encoding=fitted.record())
    ids = fitted.transform(np.array(CORPUS[:3], dtype=object))
    batch = best.prepare(ids)
    assert batch.dtype == torch.int64 and torch.equal(batch, torch.as_tensor(ids))
    assert len(best.predict(ids)) == 3
    with pytest.raises(ValueError, match="int64 token ids"):
        best.prepare(np.array(CORPUS[:3], dtype=object))  # texts: tokenised first, as the message says


def test_a_held_out_test_split_never_shapes_the_inputs_and_a_job_gets_the_planners_shape(tmp_path):
    """No official test split: the held-out test texts count neither in the length nor in the vocabulary
    the models are built for; and an evaluator encodes to the shape the planner's facts gave, which its
    own measurement might miss (WordPiece breaks ties at random between processes)."""
    root = tmp_path / "data"
    (root / "s").mkdir(parents=True)
    texts = [f"a {w} movie" for w in ("good", "bad")] * 30 + [" ".join(f"w{i}" for i in range(60))]
    Dataset.from_dict({"text": texts, "label": [0, 1] * 30 + [0]}, features=FEATURES).save_to_disk(str(root / "s"))
    loaded = load_dataset("hf:s", data_dir=root, config=DataConfig(max_length=128))
    assert loaded.input_shape == (64,)  # all 61 texts: the 60-word one sets the length
    ds = with_test_split(loaded, 0.2, seed=1)  # test_seed 1 holds the 60-word text out (seed 0 would not)
    assert ds.test_source == "held_out" and any(len(str(t).split()) == 60 for t in ds.x_test)
    assert ds.input_shape == (8,) and ds.facts().text.longest < 10 and ds.facts().text.vocab_size < loaded.encoder.vocab_size
    planned = ds.planned([16], 40)
    assert planned.input_shape == (16,) and split(planned, 0).x_train.shape[1] == 16
    assert split(planned, 0).x_train.max() < 40 and ds.planned(list(ds.input_shape)) is ds
    # the settings, not the measurements, are what a job's evaluator must share with the planner
    assert ds.facts().encoding_settings == "wordpiece, vocab_size 8000, max_length 128"
    other = load_dataset("hf:s", data_dir=root, config=DataConfig(tokenizer="bpe", max_length=128))
    assert other.facts().encoding_settings == "bpe, vocab_size 8000, max_length 128"
    tables = with_test_split(load_dataset("iris"))
    with pytest.raises(ValueError, match=r"its inputs here are \[4\], the planner's \[5\]"):
        tables.planned([5])


def test_an_exported_text_model_takes_texts_pairs_or_ids_and_says_what_it_cannot(tmp_path):
    """BestModel.prepare (researcher/load.py) with a seed's own tokenizer: texts as a list, an array or a
    Series give the ids the seed trained on; ids pass as they are; the wrong shape of input is named."""
    import pandas as pd

    from researcher.load import BestModel

    root = tmp_path / "data"
    (root / "s").mkdir(parents=True)
    Dataset.from_dict({"text": CORPUS, "label": [0, 1] * (len(CORPUS) // 2)}, features=FEATURES).save_to_disk(str(root / "s"))
    ds = with_test_split(load_dataset("hf:s", data_dir=root))
    data = split(ds, 0)
    best = BestModel(model=None, seed=0, class_names=["neg", "pos"], input_shape=list(ds.input_shape), mean=None,
                     std=None, encoding=data.encoding, tokenizer=data.fitted)
    texts = [str(t) for t in ds.x_test[:3]]
    want = data.prepare(np.array(texts, dtype=object))
    for given in (texts, np.array(texts), pd.Series(texts), want, pd.Series(list(want))):
        assert (best.prepare(given).numpy() == want).all(), type(given)
    for bad, says in (("one text", "not a single string"), (["a", 3], "mix texts"), ([("a", "b")], "single texts")):
        with pytest.raises(ValueError, match=says):
            best.prepare(bad)
