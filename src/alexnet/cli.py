"""The ``alexnet`` command: parses arguments and wires the pieces together; the only entry point.

Exit status: 0 on success, 2 for bad arguments or bad input (one line on stderr naming the value or
file and what is wrong), 1 for anything else. ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from alexnet.data.datasets import dataset_help
from alexnet.errors import InputError, TrainingStopped
from alexnet.runtime import PRECISIONS, tune_allocator
from alexnet.tta import TTA_MODES

app = typer.Typer(
    name="alexnet",
    help="The AlexNet family and VGG: build, train, evaluate and export image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def _output_file(path: Path | None) -> Path | None:
    """An output file the user named: its folder must exist (a typo must not create folders)."""
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder for {path.name}")
    return path


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command("models")
def models_command(as_json: JsonFlag = False) -> None:
    """List the architectures with parameter counts and default input sizes."""
    from alexnet.models import get_architecture, list_models, model_spec

    rows = []
    for name in list_models():
        spec = model_spec(name)
        params = get_architecture(name).params  # from the plan: no torch, nothing built
        rows.append({"name": name, "params": params, "image_size": spec.image_size, "description": spec.description})
    if as_json:
        _print_json({"models": rows})
        return
    width = max(len(r["name"]) for r in rows)
    typer.echo(f"{'model':<{width}}  {'parameters':>12}  {'input':>5}  description")
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['params']:>12,}  {r['image_size']:>5}  {r['description']}")
    typer.echo("\nParameters at each model's default classes, as torchvision counts them (no BatchNorm statistics).")


@app.command("summary")
def summary_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Registered model name (see `alexnet models`).")],
    classes: Annotated[int | None, typer.Option("--classes", min=1, help="Output classes.")] = None,
    in_channels: Annotated[int, typer.Option("--in-channels", min=1, help="Input channels (1 for MNIST).")] = 3,
    image_size: Annotated[int | None, typer.Option("--image-size", min=1, help="Input side in px.")] = None,
    hidden: Annotated[str | None, typer.Option("--hidden", help="Classifier hidden widths, e.g. 4096,1024.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Layer table with output shapes and parameters, totals (trainable / non-trainable) and MACs."""
    from alexnet.models import get_architecture, model_spec
    from alexnet.models.summary import format_summary, summarize

    spec = model_spec(model)
    size = image_size or spec.image_size
    kwargs: dict = {"in_channels": in_channels}
    if classes is not None:
        kwargs["num_classes"] = classes
    if hidden is not None:
        from alexnet.training.config import parse_widths

        kwargs["hidden"] = parse_widths(hidden, "--hidden")
    summary = summarize(get_architecture(model, image_size=size, **kwargs), model, (in_channels, size, size))
    if as_json:
        _print_json(summary.to_dict())
    else:
        typer.echo(format_summary(summary))


@app.command("data")
def data_command(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help=f"{dataset_help()}.")],
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Where datasets live (default $ALEXNET_DATA or ~/.cache/alexnet/data)."),
    ] = None,
    train_fraction: Annotated[
        float, typer.Option("--train-fraction", help="Stratified fraction of the training images to keep.")
    ] = 1.0,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Stratified fraction held out of train for validation.")
    ] = 0.0,
    storage_size: Annotated[
        int | None,
        typer.Option("--storage-size", min=8, help="Side of decoded folder images, px (default: their own, <= 256)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the splits.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Find or download a dataset; print its splits, sizes, classes and statistics."""
    from alexnet.data import load_splits
    from alexnet.data.describe import describe, format_description

    found = load_splits(
        dataset, root, train_fraction=train_fraction, val_fraction=val_fraction, seed=seed, storage_size=storage_size
    )
    report = describe(found)
    if as_json:
        _print_json(report)
    else:
        typer.echo(format_description(report))


@app.command("recipes")
def recipes_command(as_json: JsonFlag = False) -> None:
    """List the named training recipes."""
    from alexnet.training.config import DEFAULT_RECIPE, read_recipe, recipe_names

    rows = []
    for name in recipe_names():
        settings, description = read_recipe(name)
        rows.append({"name": name, "model": settings.get("model"), "data": settings.get("data"),
                     "epochs": settings.get("epochs"), "description": " ".join(description.split())})  # fmt: skip
    if as_json:
        _print_json({"recipes": rows, "default": DEFAULT_RECIPE})
        return
    for r in rows:
        default = " (default)" if r["name"] == DEFAULT_RECIPE else ""
        typer.echo(f"{r['name']}{default}: {r['model']} on {r['data']}, {r['epochs']} epochs")
        typer.echo(f"    {r['description']}")


def _train_command(
    recipe: str | None,
    config_file: Path | None,
    out: Path | None,
    resume: Path | None,
    settings: list[str] | None,
    as_json: bool,
    **flags,
) -> None:
    """Train, validating each epoch, then test; writes a run directory.

    Every setting is a flag; the defaults shown are the built-in ones, which a recipe's values replace.
    """
    from alexnet.training.config import load_resume, parse_settings, resolve_config
    from alexnet.training.run import train

    overrides = {k: v for k, v in flags.items() if v is not None}
    written = parse_settings(settings or ())
    if resume is not None:
        if recipe or config_file or out:
            raise InputError("--resume continues a run as configured; it takes no --recipe, --config or --out")
        config = load_resume(resume, overrides | written)
    else:
        config = resolve_config(recipe=recipe, config_file=config_file, overrides=overrides, settings=written)
    report = train(config, out=out, resume=resume)
    if report is None:  # a process other than global rank 0 of a distributed run: rank 0 reports
        return
    if as_json:
        _print_json(report)
        return
    top1 = report.get("test_top1")
    result = f"test top-1 {top1:.2%}, top-5 {report['test_top5']:.2%}" if top1 is not None else "no test split"
    if top1 is not None:
        result += f" on {report['test_images']:,} images, {report['test_split']}"
    speed = f"{report['train_time_s']:.0f} s, {report['images_per_s']} images/s"
    epochs = f"{report['epochs']} epoch" + ("" if report["epochs"] == 1 else "s")
    typer.echo(f"{report['model']} on {report['data']}: {result} after {epochs} ({speed})")
    if "members" in report:  # an ensemble: its time is all members'; each member's own figure
        alone = [f"{m['test_top1']:.2%}" if m["test_top1"] is not None else "no test" for m in report["members"]]
        typer.echo(f"members alone (seeds {', '.join(str(m['seed']) for m in report['members'])}): {', '.join(alone)}")
    if "teacher" in report:  # born-again: its time is the teacher's and its own
        taught = report["teacher"]
        alone = f"{taught['test_top1']:.2%}" if taught["test_top1"] is not None else "no test"
        typer.echo(f"teacher alone (seed {taught['seed']}): {alone}; {taught['train_time_s']:.0f} s of the training")
    typer.echo(f"run directory: {report['run_dir']}")


def _train_signature() -> inspect.Signature:
    """``alexnet train``'s parameters: its own options, then one flag per ``TrainConfig`` field, derived
    from the field (name, type, choices, and the help written beside it)."""
    from alexnet.training.config import TrainConfig, settings

    def option(name: str, annotation, default=None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    path = lambda flag, text: Annotated[Path | None, typer.Option(flag, help=text)]  # noqa: E731
    own = [
        option("recipe", Annotated[str | None, typer.Option("--recipe", help="Named recipe (see `alexnet recipes`).")]),
        option("config_file", path("--config", "YAML settings (e.g. a run's config.yaml).")),
        option("out", path("--out", "Run directory (default runs/<name>-<time>).")),
        option("resume", path("--resume", "Continue the run in this directory.")),
        option("settings", Annotated[list[str] | None, typer.Option(
            "--set", help="Any setting as KEY=VALUE (VALUE read as YAML), repeatable: --set lookahead=0.95.")]),
        option("as_json", JsonFlag, False),
    ]  # fmt: skip
    defaults = TrainConfig()
    derived = []
    for s in settings():
        if s.name == "recipe":  # informational: --recipe above picks the recipe
            continue
        flag = "--" + s.name.replace("_", "-")
        declared = f"{flag}/--no-{flag[2:]}" if s.kind is bool else flag
        default = getattr(defaults, s.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        # Parentheses, not brackets: rich reads [...] as markup and drops it.
        text = s.help + (f" (one of: {', '.join(s.choices)})" if s.choices else "")
        text += f" (default: {shown})" if shown not in (None, {}) else ""
        info = typer.Option(declared, help=text, show_default=False, rich_help_panel=s.section.capitalize() or None)
        derived.append(option(s.name, Annotated[s.kind | None, info]))
    return inspect.Signature([*own, *derived])


_train_command.__signature__ = _train_signature()
_train_command.__annotations__ = {p.name: p.annotation for p in _train_command.__signature__.parameters.values()}
app.command("train")(_train_command)


SOURCE_HELP = "A run or model directory, a .ckpt, a model.safetensors or an exported .onnx"
SourceArg = Annotated[Path, typer.Argument(metavar="RUN_DIR|CKPT|ONNX", help=f"{SOURCE_HELP}.")]
TtaOption = Annotated[str, typer.Option("--tta", help=f"Test views: {', '.join(TTA_MODES)} (ten-crop: the paper's).")]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help=f"{', '.join(PRECISIONS)} (auto: bf16 where this machine does it fast).")
]
CompileOption = Annotated[
    bool, typer.Option("--compile/--no-compile", help="torch.compile with frozen weights (slower start).")
]


def ensemble_option(metavar: str, help: str) -> object:
    """``--ensemble``: more models to average with the first, repeatable."""
    return Annotated[list[Path] | None, typer.Option("--ensemble", metavar=metavar, help=help)]


ENSEMBLE_HELP = "Another model to average with the first (repeat for more): an ensemble, as evaluate's"
EnsembleOption = ensemble_option("RUN_DIR|CKPT|ONNX", f"{ENSEMBLE_HELP}.")
ExportEnsembleOption = ensemble_option(
    "RUN_DIR|CKPT", f"{ENSEMBLE_HELP}, exported as one graph (default file: ensemble.onnx beside the first)."
)


@app.command("evaluate")
def evaluate_command(
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR|CKPT|ONNX",
            help=f"{SOURCE_HELP}; several: an ensemble, their class probabilities averaged.",
        ),
    ],
    data: Annotated[str | None, typer.Option("--data", help="Dataset (default: the run's).")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Dataset root (default: the run's).")] = None,
    split: Annotated[str, typer.Option("--split", help="test, val (the run's held-out split) or train.")] = "test",
    tta: TtaOption = "none",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 256,
    precision: PrecisionOption = "auto",
    compile_model: CompileOption = False,
    as_json: JsonFlag = False,
) -> None:
    """Top-1/top-5, loss, per-class scores and confusion matrix; writes eval-<split>-<tta>.json beside the run
    (eval-ensemble-<split>-<tta>.json beside the first of several)."""
    from alexnet.evaluation import evaluate, format_report

    report = evaluate(
        sources, data=data, root=root, split=split, tta=tta, batch_size=batch_size, precision=precision,
        compile=compile_model,
    )  # fmt: skip
    if as_json:
        _print_json(report)
    else:
        typer.echo(format_report(report))


@app.command("predict")
def predict_command(
    source: SourceArg,
    inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_DIR...", help="Image files and folders.")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes shown per image.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image (JSON lines).")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the predictions to this CSV file.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 64,
    tta: TtaOption = "none",
    precision: PrecisionOption = "auto",
    compile_model: CompileOption = False,
    ensemble: EnsembleOption = None,
) -> None:
    """Top-K classes with probabilities for image files and folders; exit 2 if any image could not be read."""
    from alexnet.atomic import write_text
    from alexnet.inference import load_ensemble
    from alexnet.prediction import format_csv, format_line, iter_predictions

    _output_file(out)
    classifier = load_ensemble([source, *(ensemble or ())], precision=precision, compile=compile_model)
    results, failed = [], 0
    for result in iter_predictions(classifier, inputs, top_k=top_k, batch_size=batch_size, tta=tta):
        results.append(result)
        if "error" in result:
            failed += 1
            typer.echo(f"alexnet: error: {result['path']}: {result['error']}", err=True)
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
        elif "error" not in result:
            typer.echo(format_line(result))
        sys.stdout.flush()
    if out is not None:
        write_text(out, format_csv(results, min(top_k, len(classifier.classes))))
    if failed:
        raise typer.Exit(2)


@app.command("export")
def export_command(
    source: Annotated[
        Path, typer.Argument(metavar="RUN_DIR|CKPT", help="A run or model directory, a .ckpt or a model.safetensors.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: model.onnx beside the run).")] = None,
    opset: Annotated[int, typer.Option("--opset", min=7, help="ONNX opset version.")] = 18,
    ensemble: ExportEnsembleOption = None,
    as_json: JsonFlag = False,
) -> None:
    """A deployable model (ONNX with a dynamic batch axis and the model card in its metadata), checked against
    PyTorch with onnxruntime on images of the run's data; the check is written beside it."""
    from alexnet.export import FORMATS, export_onnx

    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}; use {', '.join(FORMATS)}")
    check = export_onnx([source, *(ensemble or ())], _output_file(out), opset=opset)
    if as_json:
        _print_json(check)
        return
    typer.echo(
        f"exported {check['onnx']} ({check['bytes'] / 2**20:.1f} MiB, opset {check['opset']}): onnxruntime against "
        f"PyTorch on {check['check_images']} {check['images_from']} images: max logit difference "
        f"{check['max_abs_logit_diff']:.1e}, top-1 agreement {check['top1_agreement']:.0%}"
    )


@app.command("visualize")
def visualize_command(
    source: Annotated[Path, typer.Argument(metavar="RUN_DIR|CKPT", help="A run or model directory, or a .ckpt.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the PNGs (default RUN_DIR/visualize).")] = None,
    images: Annotated[int, typer.Option("--images", min=1, help="Test images in the Grad-CAM grid.")] = 16,
    as_json: JsonFlag = False,
) -> None:
    """First-layer kernels (the paper's Figure 3), Grad-CAM heatmaps over test images and the nearest training
    images in feature space (Figure 4), as PNGs."""
    from alexnet.visualize.figures import visualize

    written = visualize(source, out, images=images)
    if as_json:
        _print_json(written)
        return
    for name, path in written.items():
        typer.echo(f"{name}: {path}")


@app.command("features")
def features_command(
    source: SourceArg,
    inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_DIR...", help="Image files and folders.")],
    layer: Annotated[
        str, typer.Option("--layer", help="A module name (features.10, classifier.4, avgpool) or penultimate.")
    ] = "penultimate",
    out: Annotated[Path, typer.Option("--out", help="Where to write the (N, D) float32 array (.npy).")] = Path(
        "features.npy"
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 64,
    precision: PrecisionOption = "auto",
) -> None:
    """Features of image files from a named layer, (N, D) in a .npy file, and the images' paths in the same
    order beside it (FILE.txt); exit 2 if any image could not be read."""
    from alexnet.inference import load_classifier
    from alexnet.visualize.features import features_of_files, write_features

    _output_file(out)
    classifier = load_classifier(source, precision=precision)
    paths, features, failed = features_of_files(classifier, inputs, layer, batch_size=batch_size)
    for path, why in failed:
        typer.echo(f"alexnet: error: {path}: {why}", err=True)
    write_features(out, paths, features)
    typer.echo(f"{out}: {features.shape[0]} x {features.shape[1] if features.ndim == 2 else 0} features of {layer}")
    if failed:
        raise typer.Exit(2)


@app.command("serve")
def serve_command(
    source: SourceArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (localhost unless told otherwise).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Requests batched into one forward pass.")] = 32,
    ensemble: EnsembleOption = None,
) -> None:
    """A web page (drop an image: top-5 and Grad-CAM) and a JSON API: POST /predict, GET /model, GET /healthz."""
    from alexnet.serve.app import serve

    serve([source, *(ensemble or ())], host=host, port=port, max_batch=max_batch)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged, not to the stream it was created with: a
    caller that redirects stderr (a test capturing it, an embedding program) after the first ``main`` would
    otherwise get "I/O operation on closed file" tracebacks in place of our lines."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Our progress lines on stderr, one per epoch."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("alexnet")
    if not ours.handlers:
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (the console script's entry point)."""
    configure_logging()
    tune_allocator()
    try:
        # Standalone mode: typer answers --help (0), usage errors (2) and Ctrl-C itself, by SystemExit.
        app(args=argv, prog_name="alexnet")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except InputError as error:
        typer.echo(f"alexnet: error: {error}", err=True)
        return 2
    except TrainingStopped as stopped:
        typer.echo(f"alexnet: {stopped}", err=True)
        return stopped.exit_code
    return 0
