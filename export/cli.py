"""`gptoss-export`: the exporter's command line. Each command turns its arguments into one library call.

Add a command with `@main.command()`; errors our code raises on purpose (`GptOssError`) print as one
`Error: ...` line and exit with status 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from .config import PRESETS
from .errors import GptOssError
from .layout import LAYOUTS
from .synth import DIMENSIONS, synth_config, write_synthetic


class _UserError(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GptOssError as e:
            raise _UserError(str(e)) from None


@click.group(cls=_Group)
def main() -> None:
    """Compile OpenAI's gpt-oss models ahead of time for ONNX Runtime targets."""


def _dimension_options(f):
    """One `--FLAG N` option per model dimension (synth.DIMENSIONS), default: the preset's."""
    for flag, field in reversed(DIMENSIONS.items()):
        f = click.option(f"--{flag.replace('_', '-')}", flag, type=click.IntRange(min=1), default=None,
                         help=f"Override {field}.")(f)
    return f


@main.command()
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="tiny", show_default=True,
              help="Model dimensions to start from.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="hf", show_default=True,
              help="File layout: Hugging Face (MXFP4), OpenAI's original/, or HF with dense bf16 experts.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
@_dimension_options
def synth(out: Path, preset_name: str, layout: str, seed: int, force: bool, **dims: int | None) -> None:
    """Write a synthetic (random, deterministic) gpt-oss checkpoint to OUT."""
    write_synthetic(out, synth_config(preset_name, **dims), layout=layout, seed=seed, force=force, progress=True)
    click.echo(str(out))
