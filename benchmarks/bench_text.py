"""`make bench-text`: how fast texts become token ids on the trusted side (shared.data.tokens).

On a generated corpus of short review-like texts (a vocabulary of made-up words with a Zipf-like
frequency, 10 to 60 words each), for each tokenizer kind: training it on the corpus (what each
seed's split costs once, before the fitted-tokenizer cache) and encoding the corpus with it to
(N, max_length) ids (what every split and test split costs). Texts/s and tokens/s (tokens as the
tokenizer counts them, before the cut), the best of a few repeats.

    python -m benchmarks.bench_text [--texts 4000] [--vocab-size 8000] [--max-length 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from shared.data.tokens import SPECIALS, TRAINED, FittedText, TextEncoder, _frame, _train


def corpus(n: int, seed: int = 0) -> np.ndarray:
    """`n` texts of 10-60 words drawn Zipf-like from 5,000 made-up words, with punctuation."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 11))) for _ in range(5000)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    texts = []
    for _ in range(n):
        chosen = rng.choice(len(words), rng.integers(10, 61), p=p)
        texts.append(" ".join(words[i] for i in chosen).capitalize() + rng.choice([".", "!", "?"]))
    return np.array(texts, dtype=object)


def measure(kind: str, texts: np.ndarray, vocab_size: int, max_length: int, repeats: int) -> dict[str, float]:
    train_s, encode_s = [], []
    fitted = None
    for _ in range(repeats):
        started = time.perf_counter()
        tok = _frame(_train(kind, list(texts), vocab_size), list(SPECIALS))
        train_s.append(time.perf_counter() - started)
        fitted = FittedText(tok, None, kind=kind, max_length=max_length, pair=False, text_columns=("text",),
                            trained_on={})
        started = time.perf_counter()
        ids = fitted.transform(texts)
        encode_s.append(time.perf_counter() - started)
    tokens = int(fitted.lengths(texts).sum())
    assert ids.shape == (len(texts), max_length)
    return {"train_s": min(train_s), "encode_s": min(encode_s), "tokens": tokens,
            "vocab": fitted.tok.get_vocab_size(with_added_tokens=True)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=4000)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    texts = corpus(args.texts)
    print(f"{len(texts)} generated texts, vocab_size {args.vocab_size}, max_length {args.max_length}, "
          f"best of {args.repeats}")
    print(f"{'tokenizer':<10} {'step':<7} {'seconds':>8} {'texts/s':>10} {'tokens/s':>11} {'vocab':>6}")
    for kind in TRAINED:
        m = measure(kind, texts, args.vocab_size, args.max_length, args.repeats)
        for step in ("train", "encode"):
            s = m[f"{step}_s"]
            print(f"{kind:<10} {step:<7} {s:>8.3f} {len(texts) / s:>10,.0f} {m['tokens'] / s:>11,.0f} {m['vocab']:>6}")
    started = time.perf_counter()  # the facts: a tokenizer fitted on the pool and the lengths counted
    TextEncoder(tokenizer="wordpiece", vocab_size=args.vocab_size, max_length=args.max_length, pair=False,
                text_columns=("text",), pool=texts).facts()
    print(f"facts (wordpiece fitted on the pool, lengths counted): {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
