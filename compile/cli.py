"""`gptoss-export`: the compiler's command line. Each command turns its arguments into one library call.

Add a command with `@main.command()`; errors our code raises on purpose (`GptOssError`) print as one
`Error: ...` line and exit with status 2, without a traceback. So does a command run without the optional
dependencies it needs (the `[export]` extra): the line says what to install. This module itself imports only
click and the exporter's light modules, so `--help` works without them; commands import the rest when they run.
"""

from __future__ import annotations

from pathlib import Path

import click

from gptoss.errors import GptOssError
from gptoss.export.config import DIMENSIONS, PRESETS
from gptoss.export.layout import LAYOUTS

# Top-level module -> the extra of pyproject.toml that installs it (a test keeps this in step with the extra).
EXTRA_OF_MODULE = {"torch": "export", "onnx": "export", "ml_dtypes": "export", "huggingface_hub": "export"}


class _UserError(click.ClickException):
    exit_code = 2


def _missing_extra(e: ModuleNotFoundError) -> _UserError | None:
    module = (e.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return _UserError(f"this command needs {module}, which is not installed: it comes with the exporter's extra, "
                      f"pip install 'gptoss[{extra}]' (from a clone: pip install -e '.[{extra}]')")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GptOssError as e:
            raise _UserError(str(e)) from None
        except ModuleNotFoundError as e:
            friendly = _missing_extra(e)
            if friendly is None:
                raise
            raise friendly from None


@click.group(cls=_Group)
def main() -> None:
    """Compile OpenAI's gpt-oss models ahead of time for ONNX Runtime targets."""


def _dimension_options(f):
    """One `--FLAG N` option per model dimension (config.DIMENSIONS), default: the preset's."""
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
@click.option("--force", is_flag=True, help="Replace OUT if it holds a previous checkpoint (nothing else).")
@_dimension_options
def synth(out: Path, preset_name: str, layout: str, seed: int, force: bool, **dims: int | None) -> None:
    """Write a synthetic (random, deterministic) gpt-oss checkpoint to OUT."""
    from gptoss.export.synth import FULL_VOCAB, synth_config, write_synthetic
    from gptoss.export.tokenizer_files import cached_o200k_base, o200k_base_missing

    config = synth_config(preset_name, **dims)
    write_synthetic(out, config, layout=layout, seed=seed, force=force, progress=True)
    click.echo(str(out))
    if config.vocab_size >= FULL_VOCAB and cached_o200k_base() is None:
        click.secho(f"warning: {out} has no tokenizer.json, and exporting it will stop for the same reason: "
                    f"{o200k_base_missing()}", err=True, fg="yellow")


def _parse_quant(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        part, sep, scheme = item.partition("=")
        if not sep or not part or not scheme:
            raise click.BadParameter(f"{item!r}: expected PART=SCHEME, e.g. attention=int4", param_hint="--quant")
        out[part.strip()] = scheme.strip()
    return out


@main.command()
@click.argument("checkpoint")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Bundle folder to write.")
@click.option("--revision", default=None, help="Of a Hugging Face repo id: the branch, tag or commit (default: main).")
@click.option("--target", default="cpu", show_default=True, help="Target (see `gptoss-export targets`).")
@click.option("--quant", multiple=True, metavar="PART=SCHEME",
              help="Weight scheme of one part (experts, attention, router, embedding, unembedding); repeatable.")
@click.option("--logits", type=click.Choice(["selectable", "all", "last"]), default=None,
              help="Which positions get logits: chosen per call by the runtime (default on dynamic targets), every "
                   "one (static targets), or the last.")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="Force the checkpoint layout; 'original' takes OpenAI's original/ subfolder.")
@click.option("--kv-cache", "kv_cache", type=click.Choice(["float32", "float16", "int8"]), default=None,
              help="KV cache dtype other than the target's own (cpu: int8, calibrated at export; docs/quantization.md).")
@click.option("--aot", is_flag=True, help="Also compile the graphs ahead of time with the target's execution "
                                         "provider (EP context models; e.g. qnn), so a device loads them as they are.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it holds a previous bundle (nothing else; never the "
                                           "checkpoint or a folder holding it).")
def export(checkpoint: str, out: Path, revision: str | None, target: str, quant: tuple[str, ...],
           logits: str | None, layout: str | None, kv_cache: str | None, aot: bool, force: bool) -> None:
    """Compile a gpt-oss CHECKPOINT into a self-contained bundle for one target.

    CHECKPOINT is a folder, or a Hugging Face repo id (openai/gpt-oss-20b) already in the local Hugging Face
    cache (HF_HUB_CACHE or HF_HOME): nothing is downloaded."""
    from .pipeline import export_bundle

    export_bundle(checkpoint, out, target=target, quant=_parse_quant(quant), logits=logits, layout=layout,
                  force=force, progress=True, aot=aot, revision=revision, kv_cache=kv_cache)


@main.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(path: str, as_json: bool) -> None:
    """Show what a bundle or checkpoint holds: config, ops, parts and sizes, target. PATH is a folder, or a
    Hugging Face repo id in the local cache."""
    import json

    from gptoss.export.hub import resolve_checkpoint

    from .inspect import describe, format_report

    info = describe(resolve_checkpoint(path))
    click.echo(json.dumps(info, indent=2) if as_json else format_report(info))


TARGET_COLUMNS = ("target", "execution provider", "package", "shapes", "kv cache", "default schemes")


@main.command()
def targets() -> None:
    """List the targets: name, execution provider and the package that brings it, shapes, KV cache dtype, default
    schemes, each with its description below."""
    from gptoss.targets.registry import TARGETS

    rows = [(t.name, t.provider.name, t.provider.package, t.shapes.kind, t.kv_dtype,
             ", ".join(f"{part}={scheme}" for part, scheme in t.quant.items())) for t in TARGETS.values()]
    widths = [max(len(row[i]) for row in [TARGET_COLUMNS, *rows]) for i in range(len(TARGET_COLUMNS) - 1)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1]

    click.echo(line(TARGET_COLUMNS))
    for t, row in zip(TARGETS.values(), rows):
        click.echo(line(row))
        click.echo(" " * (widths[0] + 2) + t.description)
