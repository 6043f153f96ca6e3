"""minicnn.explain: looking inside a trained CNN.

Receptive fields (``receptive_field``, ``layer_geometry``,
``effective_receptive_field``) live in ``minicnn.explain.receptive_field``.
"""
from .receptive_field import (Geometry, Pair, effective_receptive_field, layer_geometry,  # noqa: F401
                              receptive_field)

__all__ = ["Geometry", "Pair", "layer_geometry", "receptive_field", "effective_receptive_field"]
