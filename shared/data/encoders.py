"""Data that needs an encoding before a model can take it: a table's categories and blanks, a text
set's words. Such a data set (shared.data.datasets.Dataset with an `encoder`) keeps its raw rows
(`x` an object array: a table's cells, a text's strings), and each seed's split
(shared.data.splits.split) fits the encoder on that seed's training split only, then encodes the
training, validation and test inputs with what it fitted. So no statistic of a validation or test
sample (an imputed mean, a category, a word of the tokenizer's vocabulary) ever shapes what a model
trains on, and every seed's encoding is recorded with its result (Preprocessing.encoding).

The encoded width is fixed by the encoder, not by the fit (`output_shape`): every seed's model takes
the same input shape, whatever its training split happened to hold. Runs on the trusted side only:
the containers receive encoded arrays.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

MAX_CLASSES = 1000  # a label with more distinct values is no classification target (an identifier, a measurement)


class Fitted(Protocol):
    """An encoder fitted on one seed's training split."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw rows (an object array, as Dataset.x holds them) -> model inputs of shape
        (N, *Encoder.output_shape): float32 features, or int64 token ids."""
        ...

    def record(self) -> dict[str, Any]:
        """What was fitted, as JSON a researcher can read and a later reader can apply again (a
        table's imputation values and categories; a tokenizer's kind, size and digest): kept with
        the seed's result. Keep it small (tens of kilobytes at most): it travels in every result."""
        ...


class Encoder(Protocol):
    """How a data set's raw rows become model inputs, before any fitting."""

    output_shape: tuple[int, ...]  # one encoded sample's, without the batch axis
    dtype: str  # "float32" (features, then standardised as any table) or "int64" (token ids, never scaled)

    def fit(self, x_train: np.ndarray, y_train: np.ndarray) -> Fitted:
        """Fitted on the training split's rows only (`y_train` for encoders that need the classes; most ignore it)."""
        ...

    def facts(self) -> dict[str, Any]:
        """DatasetFacts fields this encoding adds (`text`, `columns`, `notes`, `input_dtype`): what
        the planner and the LLMs may know. Computed from the pool's inputs, never from labels."""
        ...

# Two optional methods, for encoders whose shape is measured on the data (text: the pool's vocabulary and
# longest sample) rather than fixed by its schema:
#   for_pool(x_pool) -> Encoder: the same encoding measured on `x_pool`, the rows left once a test split
#       is held out (shared.data.splits.with_test_split), so no test row shapes what a model takes;
#   sized(input_shape, vocab_size) -> Encoder: the same encoding producing exactly the shape the planner's
#       facts gave (EvalJob.input_shape), which another process's measurement might miss by a little.
