"""`make bench-text` on a small corpus: every row printed, with finite speeds."""

import re

from benchmarks.bench_text import corpus, main


def test_the_bench_prints_training_and_encoding_speeds(capsys):
    main(["--texts", "200", "--vocab-size", "300", "--max-length", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = re.findall(r"^(wordpiece|bpe)\s+(train|encode)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)\s+(\d+)$", out, re.M)
    assert [(kind, step) for kind, step, *_ in rows] == [("wordpiece", "train"), ("wordpiece", "encode"),
                                                         ("bpe", "train"), ("bpe", "encode")]
    assert all(int(texts.replace(",", "")) > 0 and int(vocab) <= 300 for *_, texts, _, vocab in rows)
    assert "facts (wordpiece fitted on the pool" in out
    assert len(corpus(50)) == 50 and (corpus(50) == corpus(50)).all()  # generated the same each time
