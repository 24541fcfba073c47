"""Errors the packers raise on bad input. Each one names the tensor at fault.

They are `ValueError`s (bad data handed to a pure function) and `GptOssError`s (so a CLI can
catch everything this project raises on purpose in one place).
"""

from gptoss.errors import GptOssError


class QuantError(GptOssError, ValueError):
    """A tensor cannot be packed or unpacked as asked. `tensor` is the name passed in by the caller."""

    def __init__(self, tensor: str, message: str):
        self.tensor = tensor
        super().__init__(f"{tensor}: {message}")


class LayoutError(QuantError):
    """A tensor's shape or dtype does not match the layout the function documents."""


class NaNScaleError(QuantError):
    """An MXFP4 scale byte is 255, which the OCP MX spec reserves for NaN."""


class NonFiniteWeightError(QuantError):
    """A weight to be quantized holds NaN or infinity."""


class BlockSizeError(QuantError):
    """A block size is not a power of two in the supported range, or does not divide the axis."""


class UnknownSchemeError(GptOssError, KeyError, ValueError):
    """A quant scheme name that the registry does not know. The message lists the known ones."""

    def __init__(self, name: str, known: tuple[str, ...]):
        self.name = name
        self.known = known
        super().__init__(f"unknown quant scheme {name!r}; known schemes: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.args[0]


class SchemePartError(QuantError):
    """A scheme was asked for a model part it does not apply to."""
