"""The web service: a page to drop an image on (top-5 with probability bars, the Grad-CAM overlay) and a JSON
API, on FastAPI. Bad input gets a 4xx with a JSON ``{"error": ...}`` and the service stays up.

    POST /predict   an image as the request body (Content-Type image/*) or as multipart field "image";
                    ?top_k=5, ?gradcam=true adds the overlay as a PNG data URL
    GET  /model     what is served: architecture, classes, input size, backend; an ensemble's members
    GET  /healthz   liveness, and how many requests the batcher has served in how many forward passes
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at runtime, and
# Request is imported inside create_app (FastAPI is optional), where only evaluated annotations can see it.
import base64
import contextlib
import copy
import io
import sys
import threading
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image

from alexnet.data.decode import decode_image
from alexnet.errors import first_line
from alexnet.extras import require
from alexnet.inference import Classifier, Ensemble, Sources, ensemble_name, listed_sources, load_ensemble
from alexnet.serve.batching import Batcher

MAX_BYTES = 10 * 2**20  # largest upload
MAX_PIXELS = 40_000_000  # largest image, by its header: a 50,000 x 50,000 PNG is refused before it is decoded


class BadImage(Exception):
    """An upload that is not a usable image: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, size: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 (3, size, size) from an uploaded file's bytes, as ``alexnet predict`` decodes files."""
    if not data:
        raise BadImage(400, "empty upload")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
            if width * height > max_pixels:
                raise BadImage(413, f"image too large: {width} x {height} pixels, over the {max_pixels:,}-pixel limit")
            return decode_image(io.BytesIO(data), size)
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise BadImage(413, f"image too large to decode ({error})") from None
        except Image.UnidentifiedImageError:
            raise BadImage(415, "not an image PIL can read (JPEG, PNG, BMP, WebP, TIFF, GIF)") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise BadImage(400, f"corrupt or truncated image ({first_line(error, 120)})") from None


def _joined(values: Sequence[str]) -> str:
    """The members' values, each once, in order: "pytorch", or "pytorch + onnxruntime"."""
    return " + ".join(dict.fromkeys(values))


class Service:
    """The classifier (or ensemble) behind the API: batched probabilities, and Grad-CAM on copies of the models
    of its own (captum's hooks must not see the batches' forward passes); an ensemble's heatmap is the mean of
    its members' (each on its own view of the image, brought to the first member's size)."""

    def __init__(self, classifier: Classifier | Ensemble, *, max_batch: int) -> None:
        self.classifier = classifier
        self.members = classifier.members if isinstance(classifier, Ensemble) else (classifier,)
        self.batcher = Batcher(self._probabilities, max_batch=max_batch)
        pytorch = all(member.backend == "pytorch" for member in self.members)
        self.explainers = [copy.deepcopy(member.model).float() for member in self.members] if pytorch else []
        self.explain_lock = threading.Lock()

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.probabilities(torch.from_numpy(images)).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        first = self.members[0].card
        members = [
            {"model": listed["model"], "source": listed["source"], "image_size": m.card.preprocess.image_size,
             "test_top1": listed.get("test_top1")}
            for m in self.members
            # an ensemble exported as one ONNX graph lists its members in its card
            for listed in m.card.members or [{"model": m.card.model, "source": str(m.weights),
                                              "test_top1": m.card.test_top1}]
        ]  # fmt: skip
        return {
            "model": ensemble_name([member["model"] for member in members]),
            "classes": list(first.classes), "image_size": first.preprocess.image_size,
            "channels": first.preprocess.channels, "backend": _joined([m.backend for m in self.members]),
            "precision": _joined(["bf16" if m.dtype == torch.bfloat16 else "fp32" for m in self.members]),
            # an ensemble's own figure where its run directory measured one (inference.ensemble_top1)
            "test_top1": self.classifier.test_top1 if isinstance(self.classifier, Ensemble) else first.test_top1,
            "gradcam": bool(self.explainers), "source": " + ".join(str(m.weights) for m in self.members),
            "members": members,
        }  # fmt: skip

    def overlay(self, image: np.ndarray, target: int) -> str:
        """The Grad-CAM heatmap for class ``target`` laid over the first model's view of ``image``: a PNG data
        URL."""
        import matplotlib

        from alexnet.visualize.figures import gradcam

        stored = torch.tensor(image)[None]  # a copy: the decoded upload may be read-only
        views = [m.preprocess.evaluate(stored, dtype=torch.float32)[0] for m in self.members]
        size = views[0].shape[-2:]
        heats = []
        with self.explain_lock:
            for explainer, view in zip(self.explainers, views, strict=True):
                heat = torch.from_numpy(gradcam(explainer, view.clone(), torch.tensor([target])))
                heats.append(torch.nn.functional.interpolate(heat[None], size=size, mode="bilinear")[0, 0])
        heat = torch.stack(heats).mean(0)
        heat = (heat / heat.max().clamp_min(1e-12)).numpy()
        picture = self.members[0].preprocess.to_pixels(views[0])[0].numpy()
        colours = matplotlib.colormaps["jet"](heat)[..., :3].transpose(2, 0, 1)
        blended = (0.55 * picture + 0.45 * colours).transpose(1, 2, 0)
        side = max(224, blended.shape[0])
        png = io.BytesIO()
        Image.fromarray((blended * 255).astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST).save(
            png, format="PNG"
        )
        return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


async def _read_body(request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadImage(413, f"upload over the {limit // 2**20} MiB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(source: Sources, *, max_batch: int = 32, max_bytes: int = MAX_BYTES, precision: str = "auto"):
    """The FastAPI application serving the classifier in ``source`` (a run or model directory, a checkpoint
    or an exported ``.onnx``), or the ensemble of several such sources (their probabilities averaged)."""
    fastapi = require("fastapi", "serve")
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse

    service = Service(load_ensemble(source, precision=precision), max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        yield
        await service.batcher.stop()

    app = fastapi.FastAPI(title="alexnet serve", lifespan=lifespan)
    app.state.service = service
    page = resources.files("alexnet.serve").joinpath("page.html").read_text()

    @app.exception_handler(BadImage)
    async def bad_image(request, error: BadImage):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "requests": service.batcher.requests, "batches": service.batcher.batches}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 5, gradcam: bool = False) -> dict[str, Any]:
        if not 1 <= top_k <= 1000:
            raise BadImage(422, f"top_k must be between 1 and 1000, not {top_k}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes + 4096:
            raise BadImage(413, f"upload over the {max_bytes // 2**20} MiB limit")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=2)
            upload = form.get("image") or form.get("file")
            if upload is None or isinstance(upload, str):
                raise BadImage(400, 'multipart upload without a file field "image"')
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise BadImage(413, f"upload over the {max_bytes // 2**20} MiB limit")
        elif kind.startswith("image/") or kind == "application/octet-stream":
            data = await _read_body(request, max_bytes)
        else:
            raise BadImage(415, f"send an image (Content-Type image/* or multipart field 'image'), not {kind!r}")
        size = service.classifier.storage_size
        import anyio

        image = await anyio.to_thread.run_sync(decode_upload, data, size)
        probabilities = await service.batcher.submit(image)
        order = np.argsort(-probabilities)[: min(top_k, len(probabilities))]
        classes = service.classifier.classes
        answer: dict[str, Any] = {
            "top": [{"class": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
        }
        if gradcam and service.explainers:
            answer["gradcam"] = await anyio.to_thread.run_sync(service.overlay, image, int(order[0]))
        return answer

    return app


def serve(source: Sources, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32) -> None:
    """Run the service with uvicorn until interrupted."""
    uvicorn = require("uvicorn", "serve")
    app = create_app(source, max_batch=max_batch)  # a model that cannot be served is refused before the line below
    shown = " + ".join(map(str, listed_sources(source)))
    print(f"serving {shown} on http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
