"""The engine's training loop, in-process on the CPU."""

import numpy as np
import pytest
import torch
from torch import nn

from shared.evaluation.trainloop import TrainSettings, balanced_weights, train_model
from shared.messaging.messages import DEFAULT_RECIPE


def recipe_settings(**kw):
    """TrainSettings with the recipe's defaults where a test does not set them."""
    recipe = {k: getattr(DEFAULT_RECIPE, k) for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay")}
    return TrainSettings(**{**recipe, **kw})


def data(n=240, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = (x[:, :classes].argmax(1)).astype(np.int64)
    return x, y


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_it_learns_and_returns_probabilities_for_every_epoch():
    x, y = data()
    out = train_model(mlp(), x[:200], y[:200], x[200:], recipe_settings(epochs=20, batch_size=32, lr=0.02, track_gradient_norms=True))
    assert out.failure is None
    assert [p["epoch"] for p in out.curve] == list(range(1, 21))
    assert out.curve[-1]["train_loss"] < out.curve[0]["train_loss"]
    assert all(p["grad_norm"] > 0 for p in out.curve)
    assert out.val_probs.shape == (40, 3) and np.allclose(out.val_probs.sum(1), 1, atol=1e-5)
    assert len(out.val_probs_per_epoch) == 20 and np.array_equal(out.val_probs_per_epoch[-1], out.val_probs)
    assert (out.val_probs.argmax(1) == y[200:]).mean() > 0.8
    assert out.samples_per_s > 0 and out.device == "cpu"


def test_the_same_seed_gives_the_same_run():
    x, y = data()
    settings = recipe_settings(epochs=3, batch_size=16, seed=7)
    a = train_model(mlp(), x, y, x[:10], settings)
    b = train_model(mlp(), x, y, x[:10], settings)
    assert a.curve == b.curve and np.array_equal(a.val_probs, b.val_probs)


def test_divergence_is_a_failure_not_a_crash():
    x, y = data()
    x[0, 0] = np.inf
    out = train_model(mlp(), x, y, x[:10], recipe_settings(epochs=2, batch_size=300))
    assert out.failure == {"reason": "diverged", "error": "training loss became nan at epoch 1"}


def test_an_unknown_optimizer_is_named():
    x, y = data()
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        train_model(mlp(), x, y, x[:10], recipe_settings(optimizer="lion"))


def test_augmentation_crops_and_flips_reproducibly():
    from shared.evaluation.trainloop import augment_batch

    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    a = augment_batch(x, torch.Generator().manual_seed(3), pad=2)
    b = augment_batch(x, torch.Generator().manual_seed(3), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)  # this seed shifts and flips
    images = torch.randn(16, 3, 8, 8)
    out = train_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 3)), images,
                      torch.randint(0, 3, (16,)), images[:4], recipe_settings(epochs=2, batch_size=8, augment=True))
    assert out.failure is None and len(out.curve) == 2


def test_class_weights_are_scikit_learns_balanced_ones_from_the_training_labels():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 90 + [1] * 7 + [2] * 3)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert torch.allclose(balanced_weights(torch.as_tensor(y), 3), torch.as_tensor(expected, dtype=torch.float32))
    # a class the model outputs but the labels lack never enters the loss: weight 1, not a division by zero
    assert balanced_weights(torch.tensor([0, 0, 1]), 3).tolist() == pytest.approx([0.75, 1.5, 1.0])


def test_class_weights_change_the_training_and_keep_it_reproducible():
    x, y = data()
    y = np.where(np.arange(len(y)) % 10 == 0, 2, 0)  # 10% rare class
    runs = [train_model(mlp(), x, y, x[:8], recipe_settings(epochs=2, class_weights=weighted)) for weighted in (False, True, True)]
    assert runs[1].curve == runs[2].curve and runs[0].curve != runs[1].curve
