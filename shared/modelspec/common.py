"""What the assembler's modules share: the error of a config, and how a shape is written."""

from __future__ import annotations


class ConfigError(ValueError):
    """A model_config that cannot become a module; ``layer_index`` is None for top-level keys."""

    def __init__(self, reason: str, layer_index: int | None = None, layer_type: str | None = None):
        self.reason = reason
        self.layer_index = layer_index
        self.layer_type = layer_type
        if layer_index is None:
            where = ""
        elif layer_type:
            where = f"layer {layer_index} ({layer_type}): "
        else:
            where = f"layer {layer_index}: "
        super().__init__(where + reason)


def fmt_shape(shape: tuple[int, ...]) -> str:
    """(16, 6, 6) -> '(B, 16, 6, 6)'."""
    return "(" + ", ".join(["B", *map(str, shape)]) + ")"
