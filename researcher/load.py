"""Load an exported best model (`experiments/<run_id>/best/`, shared/registry/best_model.py) and
predict with it:

    from researcher.load import load_best
    best = load_best("export/experiments/RUN_ID/best")   # imports model_code.py: the generated code runs here
    labels = best.predict(inputs)                        # class names, for inputs shaped (N, *input_shape)
    labels = best.predict(pandas.read_csv("new.csv"))    # a table's raw rows: its recorded encoding applied

    labels = best.predict(["a fine film", "dull"])     # a text model: texts (pairs: [(a, b), ...]), tokenised
                                                         # by the seed's own tokenizer, which its weights carry

A text model takes texts or int64 token ids (N, max_length), never scaled: preprocessing.json's
`encoding` describes the tokenizer its seed fitted on its own training split, and the seed's
safetensors file holds it (its metadata: "tokenizer.json").

Loading imports the generated code into this process, outside any sandbox: the user's choice,
made by calling this. The weights are read by the safetensors library (no pickle)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BestModel:
    model: Any  # the generated nn.Module, in eval mode, its seed's weights loaded
    seed: int
    class_names: list[str]  # output column i is class_names[i]
    input_shape: list[int]  # one sample's
    mean: Any  # np.ndarray, the seed's training-split statistics, broadcast over a batch
    std: Any
    # the encoding fitted on the seed's training split (a table's medians and categories, a text set's
    # tokenizer), None if none
    encoding: dict[str, Any] | None = None
    tokenizer: Any = None  # a text seed's (shared.data.tokens.FittedText), from its weights' metadata

    def prepare(self, inputs) -> Any:
        """Samples -> the model's batch. For a text model (a text `encoding`): token ids
        (N, max_length), the int64 batch as they are (ids are never scaled). For a table read from a
        file (a table `encoding` recorded): its raw rows, a pandas DataFrame with the file's columns
        (the target's may be there or not), encoded as the seed's training split was; otherwise samples
        as shared.data.datasets.load_dataset gives them, shaped (N, *input_shape), normalised float32."""
        import numpy as np
        import torch

        shape = f"(N, {', '.join(map(str, self.input_shape))})"
        if self.encoding is not None and self.encoding.get("kind") == "text":
            x = self._text_ids(inputs)
            if x.dtype.kind not in "iu" or list(x.shape[1:]) != self.input_shape:
                raise ValueError(f"inputs {x.dtype} shaped {list(x.shape)}; this text model takes int64 token ids "
                                 f"{shape}, or texts where its weights carry its tokenizer"
                                 + ("" if self.tokenizer is not None else " (these do not: exported before they did)"))
            return torch.as_tensor(x, dtype=torch.int64)
        if self.encoding is not None:
            inputs = self.encode(inputs)
        x = np.asarray(inputs, dtype=np.float32)
        if list(x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs shaped {list(x.shape)}; this model takes {shape}")
        return torch.as_tensor((x - self.mean) / self.std, dtype=torch.float32)

    def _text_ids(self, inputs) -> Any:
        """A text model's inputs -> token ids: texts (a list, an array or a Series of str; pairs as (a, b)
        rows) through the seed's tokenizer, ids as they are; ValueError for a mix, a str alone, or pairs
        given to a model of single texts and the other way round."""
        import numpy as np

        if isinstance(inputs, (str, bytes)) or (iter(inputs) is inputs if hasattr(inputs, "__iter__") else False):
            raise ValueError("pass a list of texts (or of (a, b) pairs), not a single string or an iterator")
        x = np.asarray(inputs, dtype=object)
        if x.ndim == 1 and len(x) and all(isinstance(c, (tuple, list, np.ndarray)) for c in x):  # a Series of rows
            x = np.array([list(c) for c in x], dtype=object)
        cells = list(x.ravel())
        if not cells or not all(isinstance(c, (str, np.str_)) for c in cells):  # ids (or nothing): as integers
            if any(isinstance(c, (str, np.str_)) for c in cells):
                raise ValueError("inputs mix texts with other values; pass texts (or (a, b) pairs) or int64 token ids")
            try:
                return x.astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"inputs are neither texts nor token ids ({exc})") from None
        if self.tokenizer is None:
            raise ValueError("this export's weights carry no tokenizer (exported before they did): pass int64 token "
                             f"ids (N, {', '.join(map(str, self.input_shape))})")
        pair, columns = self.tokenizer.pair, ", ".join(self.encoding.get("text_columns", []))
        if pair and not (x.ndim == 2 and x.shape[1] == 2):
            raise ValueError(f"this model reads sentence pairs ({columns}): pass (a, b) rows, not {list(x.shape)}")
        if not pair and x.ndim != 1:
            raise ValueError(f"this model reads single texts ({columns}): pass a list of strings, not {list(x.shape)}")
        return self.tokenizer.transform(x)

    def encode(self, rows) -> Any:
        """A table's raw rows (a DataFrame) -> its features, with the recorded encoding."""
        import pandas as pd

        from shared.data.table_encoding import FittedTable
        from shared.data.tables import normalise_text

        if self.encoding.get("kind") != "table":
            raise ValueError(f"this model takes inputs encoded as its preprocessing.json's encoding says "
                             f"(kind {self.encoding.get('kind')!r}); encode them first, shaped (N, {self.input_shape})")
        if not isinstance(rows, pd.DataFrame):
            raise ValueError("this model was trained on a table's encoded rows: pass the raw rows as a pandas "
                             f"DataFrame with the columns {', '.join(self.encoding['inputs'])}")
        missing = [name for name in self.encoding["inputs"] if name not in rows.columns]
        if missing:
            raise ValueError(f"rows lack the columns {', '.join(missing)}; this model's table had "
                             f"{', '.join(self.encoding['inputs'])}")
        frame = rows[self.encoding["inputs"]].copy()
        for name in frame.columns:  # trimmed, "?" and "NA" blank, as the training file was read
            if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name]):
                frame[name] = normalise_text(frame[name])
        return FittedTable.from_record(self.encoding).transform(frame.to_numpy(object))

    def predict(self, inputs) -> list[str]:
        """The class name of each sample."""
        import torch

        with torch.no_grad():
            return [self.class_names[i] for i in self.model(self.prepare(inputs)).argmax(1).tolist()]


def load_best(folder: str | Path, seed: int | None = None) -> BestModel:
    """The model of `folder` (an export's best/) with the weights of `seed` (default: its best seed)."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    info = json.loads((folder / "preprocessing.json").read_text())
    chosen = info["best_seed"] if seed is None else seed
    entry = info["seeds"].get(str(chosen)) if chosen is not None else None
    if not entry or not entry.get("weights"):
        why = entry.get("weights_error") if entry else "no seed of this export has weights"
        raise ValueError(f"{folder}: no weights for seed {chosen}: {why}")
    spec = importlib.util.spec_from_file_location(f"model_code_{info['run_id']}", folder / "model_code.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)  # the generated code runs here
    model = getattr(code, info["class_name"])()
    model.load_state_dict(load_file(folder / entry["weights"]))
    model.eval()
    encoding, tokenizer = entry.get("encoding"), None
    with safe_open(folder / entry["weights"], "pt") as weights:
        metadata = weights.metadata() or {}
    if encoding and encoding.get("kind") == "text" and "tokenizer.json" in metadata:
        from shared.data.tokens import FittedText

        tokenizer = FittedText.from_artifact(metadata, encoding)
    return BestModel(model=model, seed=int(chosen), class_names=list(info["class_names"]),
                     input_shape=list(info["input_shape"]), mean=np.array(entry["mean"], dtype=np.float32),
                     std=np.array(entry["std"], dtype=np.float32), encoding=encoding, tokenizer=tokenizer)

