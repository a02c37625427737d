"""Generated text data sets in the Hugging Face formats, for trying the text path without a download
and for the tests and the text benchmarks: `python -m benchmarks.sample_data DATA_DIR` writes

    DATA_DIR/reviews/       a sentiment-like set (text, label: negative/positive) written by
                            `datasets`' save_to_disk, with a train and a test split: `hf:reviews`
    DATA_DIR/paraphrase/    a GLUE-like sentence-pair set (sentence1, sentence2, label) as the Hub
                            lays out Parquet files: train/validation/test, the test split unlabelled
                            (label -1) as GLUE's is: `hf:paraphrase`

The texts are short reviews drawn from a seeded vocabulary: each holds a few words that carry the
sentiment among neutral filler, some of them negated ("not good"), and a share of the labels is
flipped, so no model reaches 100% and a bag of words does worse than a model of word order. The
pairs are two sentences about a topic; they are paraphrases when they share the topic and its
attribute, not when either differs.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

POSITIVE = ("good", "great", "excellent", "wonderful", "superb", "enjoyable", "brilliant", "charming", "delightful",
            "moving", "fun", "solid", "fresh", "gripping", "lovely")
NEGATIVE = ("bad", "awful", "boring", "dull", "terrible", "weak", "poor", "messy", "tedious", "bland", "clumsy",
            "forgettable", "silly", "flat", "painful")
FILLER = ("the", "film", "movie", "story", "plot", "acting", "was", "is", "a", "an", "and", "but", "with", "cast",
          "scenes", "ending", "director", "script", "music", "really", "quite", "very", "this", "it", "of", "to",
          "in", "for", "at", "overall", "i", "thought", "found", "felt", "characters", "dialogue", "camera", "long",
          "short", "second", "half", "first", "time", "some", "most", "parts")
TOPICS = ("river", "city", "garden", "engine", "violin", "market", "bridge", "forest", "harbor", "tower", "school",
          "museum")
ATTRIBUTES = ("old", "new", "quiet", "busy", "small", "large", "red", "green", "famous", "hidden")


def review(rng: random.Random, label: int) -> str:
    """A short review: 2-4 sentiment words of the label's side (a quarter of them negated words of the
    other side: "not dull" is positive), one word of the other side, among 6-16 filler words."""
    own, other = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 16))]
    cues = [f"not {rng.choice(other)}" if rng.random() < 0.25 else rng.choice(own) for _ in range(rng.randint(2, 4))]
    cues.append(rng.choice(other))  # a word against the label: counting words alone misleads sometimes
    for cue in cues:
        words.insert(rng.randrange(len(words) + 1), cue)
    return " ".join(words)


def reviews(n: int, seed: int = 0, noise: float = 0.05) -> tuple[list[str], list[int]]:
    """`n` reviews, balanced, with a `noise` share of their labels flipped."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    texts = [review(rng, label) for label in labels]
    return texts, [1 - y if rng.random() < noise else y for y in labels]


def pair(rng: random.Random, label: int) -> tuple[str, str]:
    topic, attribute = rng.choice(TOPICS), rng.choice(ATTRIBUTES)
    first = f"the {attribute} {topic} is {rng.choice(FILLER)} {rng.choice(FILLER)}"
    if label == 1:
        return first, f"a {topic} that is {attribute} {rng.choice(FILLER)}"
    if rng.random() < 0.5:  # another topic, same attribute: a near miss
        return first, f"a {rng.choice([t for t in TOPICS if t != topic])} that is {attribute} {rng.choice(FILLER)}"
    return first, f"a {topic} that is {rng.choice([a for a in ATTRIBUTES if a != attribute])} {rng.choice(FILLER)}"


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    made = [pair(rng, label) for label in labels]
    return [a for a, _ in made], [b for _, b in made], labels


def write_reviews(folder: Path, n_train: int = 4000, n_test: int = 1000, seed: int = 0) -> Path:
    """A DatasetDict (train, test) written by save_to_disk, its label a ClassLabel."""
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    parts = {}
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        texts, labels = reviews(n, s)
        parts[name] = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def write_paraphrase(folder: Path, n_train: int = 3000, n_val: int = 600, n_test: int = 600, seed: int = 0) -> Path:
    """Parquet files written by `datasets` in the Hub's layout (`data/SPLIT-00000-of-00001.parquet`),
    the test split unlabelled (-1) as GLUE's."""
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                                  "idx": datasets.Value("int32")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", n_train, seed), ("validation", n_val, seed + 1), ("test", n_test, seed + 2)):
        a, b, labels = pairs(n, s)
        if name == "test":
            labels = [-1] * n
        part = datasets.Dataset.from_dict({"sentence1": a, "sentence2": b, "label": labels, "idx": list(range(n))},
                                          features=features)
        part.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="the data directory (data.dir) to write into")
    parser.add_argument("--train", type=int, default=4000, help="training reviews (default 4000)")
    args = parser.parse_args(argv)
    print(write_reviews(args.data_dir / "reviews", n_train=args.train), "-> hf:reviews")
    print(write_paraphrase(args.data_dir / "paraphrase"), "-> hf:paraphrase")


if __name__ == "__main__":
    main()
