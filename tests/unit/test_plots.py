"""Figures come back as PNG bytes of the expected pixel size; no visual snapshots."""

import io

import matplotlib.image as mpimg
import numpy as np
import pytest

from shared.evaluation.plots import CURVES_SIZE, DPI, confusion_matrix_png, confusion_matrix_size, learning_curves_png, seeds_label


def pixels(png: bytes) -> tuple[int, ...]:
    """(height, width, channels) of the decoded image."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return mpimg.imread(io.BytesIO(png)).shape


def expected(size: tuple[float, float]) -> tuple[int, int]:
    width, height = size
    return round(height * DPI), round(width * DPI)


def curve(n_epochs: int, *, with_val: bool = True, shift: float = 0.0) -> list[dict]:
    out = []
    for e in range(1, n_epochs + 1):
        entry = {"epoch": e, "train_loss": 1.0 / e + shift, "train_accuracy": 1 - 0.5 / e}
        if with_val:
            entry.update(val_loss=1.2 / e + shift, val_accuracy=0.9 - 0.5 / e)
        out.append(entry)
    return out


@pytest.mark.parametrize("n_classes, normalized", [(3, False), (10, True), (100, False)])
def test_confusion_matrix_png(n_classes, normalized):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, size=(n_classes, n_classes))
    matrix = (cm / cm.sum(axis=1, keepdims=True)).tolist() if normalized else cm.tolist()
    shape = pixels(confusion_matrix_png(matrix, [f"class {i}" for i in range(n_classes)], normalized=normalized,
                                        title="digits"))
    assert shape[:2] == expected(confusion_matrix_size(n_classes))


def test_confusion_matrix_grows_with_the_class_count():
    small = pixels(confusion_matrix_png([[1, 0], [0, 1]], ["a", "b"]))
    large = pixels(confusion_matrix_png(np.eye(30, dtype=int).tolist(), [str(i) for i in range(30)]))
    assert large[0] > small[0] and large[1] > small[1]


def test_confusion_matrix_shape_must_match_the_names():
    with pytest.raises(ValueError, match="expected"):
        confusion_matrix_png([[1, 0], [0, 1]], ["a", "b", "c"])


@pytest.mark.parametrize("curves", [
    [curve(8)],                                          # one seed
    [curve(8), curve(8, shift=0.1), curve(6, shift=0.05)],  # several seeds, one stopped early
    [curve(5, with_val=False)],                          # no validation
    [[{"epoch": 1, "train_loss": float("nan"), "train_accuracy": None}]],  # nothing drawable
    [],
])
def test_learning_curves_png(curves):
    assert pixels(learning_curves_png(curves, title="SmallCNN on digits"))[:2] == expected(CURVES_SIZE)


def test_a_figure_says_which_seeds_it_shows():
    assert seeds_label([3]) == "seed 3"
    assert seeds_label(["0", "1", "4"]) == "seeds 0, 1, 4"
