"""``alexnet data``'s report on a dataset: where it was found, its splits per class, image size and channel
statistics, and anything missing or odd; as a dict (``--json``) or as text."""

from __future__ import annotations

from typing import Any

from alexnet.data.imageset import Dataset, channel_stats


def describe(found: Dataset) -> dict[str, Any]:
    """The report of a loaded dataset (what ``alexnet data --json`` prints)."""
    mean, std = channel_stats(found.train.images)
    splits = {}
    for name in ("train", "val", "test"):
        part = getattr(found, name)
        if part is not None:
            splits[name] = {"images": len(part), "per_class": dict(zip(part.classes, part.class_counts(), strict=True))}
    c, h, w = found.train.image_shape
    return {
        "dataset": found.name, "source": found.source, "classes": list(found.train.classes), "channels": c,
        "image_size": [h, w], "mean": mean, "std": std, "splits": splits, "notes": list(found.notes),
    }  # fmt: skip


def format_description(report: dict[str, Any]) -> str:
    """The report as text: source, image size, statistics, a table of images per class and split, notes."""
    c, (h, w), classes, splits = report["channels"], report["image_size"], report["classes"], report["splits"]
    lines = [
        f"{report['dataset']}: {report['source']}",
        f"images {c}x{h}x{w}, {len(classes)} classes",
        "mean "
        + ", ".join(f"{m:.4f}" for m in report["mean"])
        + "   std "
        + ", ".join(f"{s:.4f}" for s in report["std"]),
    ]
    width = max(len(n) for n in classes)
    names = [n for n in ("train", "val", "test") if n in splits]
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{n:>7}" for n in names))
    lines += [f"{cls:<{width}}  " + "  ".join(f"{splits[n]['per_class'][cls]:>7,}" for n in names) for cls in classes]
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{splits[n]['images']:>7,}" for n in names))
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)
