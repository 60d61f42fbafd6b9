"""CHAIR object hallucination of image descriptions.

Ground truth, one of:
- COCO instance annotations (`instances_val2014.json`: `images` with `id` and `file_name`, `annotations`
  with `image_id` and `category_id`, `categories` with `id` and `name`), read with the synonym list;
- any per-image object list: a JSON object `{image: [object, ...]}` or JSONL records
  `{"image": ..., "objects": [...]}`; object names are mapped to canonical names through the synonym list
  and unknown names are kept as they are.
An image is named by its file name (`COCO_val2014_000000000042.jpg`); COCO files also accept the numeric id.
Descriptions: JSONL with `image` (or `image_id`) and `text` (or `caption`).
"""

from __future__ import annotations

import os
from typing import Any

from fact_rlhf_jax.eval import metrics
from fact_rlhf_jax.eval.generation import Answerer, GenerationSettings, Prompt, answer_prompts
from fact_rlhf_jax.eval.objects import ObjectVocabulary
from fact_rlhf_jax.eval.records import EvalDataError, JsonlStore, iter_jsonl, read_json, require

COLUMNS = ("chair_i", "chair_s", "coverage", "mentions", "hallucinated_mentions", "n")


def load_coco_instances(path: str, vocab: ObjectVocabulary) -> dict[str, set[str]]:
    """image key (file name and str(id)) -> canonical object names present."""
    data = read_json(path)
    for field in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(field), list):
            raise EvalDataError(f"{path}: expected COCO instances JSON with a list field {field!r}")
    names = {}
    for i, c in enumerate(data["categories"]):
        where = f"{path}, categories[{i}]"
        names[require(c, "id", int, where)] = _canonical(vocab, require(c, "name", str, where))
    per_id: dict[int, set[str]] = {}
    file_names: dict[int, str] = {}
    for i, im in enumerate(data["images"]):
        where = f"{path}, images[{i}]"
        image_id = require(im, "id", int, where)
        file_names[image_id] = require(im, "file_name", str, where)
        per_id[image_id] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}, annotations[{i}]"
        image_id = require(ann, "image_id", int, where)
        category = require(ann, "category_id", int, where)
        if image_id not in per_id:
            raise EvalDataError(f"{where}: image_id {image_id} is not in 'images'")
        if category not in names:
            raise EvalDataError(f"{where}: category_id {category} is not in 'categories'")
        per_id[image_id].add(names[category])
    out = {}
    for image_id, objects in per_id.items():
        out[file_names[image_id]] = objects
        out[str(image_id)] = objects
    return out


def load_object_lists(path: str, vocab: ObjectVocabulary) -> dict[str, set[str]]:
    if path.endswith(".jsonl"):
        out = {}
        for line, record in iter_jsonl(path):
            where = f"{path}, line {line}"
            image = require(record, "image", (str, int), where)
            objects = require(record, "objects", list, f"{path}, image {image!r}")
            out[str(image)] = {_canonical(vocab, _object_name(o, path, image)) for o in objects}
        return out
    data = read_json(path)
    if not isinstance(data, dict):
        raise EvalDataError(f"{path}: expected a JSON object {{image: [object, ...]}}")
    out = {}
    for image, objects in data.items():
        if not isinstance(objects, list):
            raise EvalDataError(f"{path}, image {image!r}: expected a list of object names")
        out[str(image)] = {_canonical(vocab, _object_name(o, path, image)) for o in objects}
    return out


def load_ground_truth(path: str, vocab: ObjectVocabulary) -> dict[str, set[str]]:
    """COCO instances if the file looks like one (has `annotations`), else a per-image object list."""
    if not path.endswith(".jsonl"):
        data = read_json(path)
        if isinstance(data, dict) and "annotations" in data:
            return load_coco_instances(path, vocab)
    return load_object_lists(path, vocab)


def _object_name(value: Any, path: str, image: Any) -> str:
    if not isinstance(value, str):
        raise EvalDataError(f"{path}, image {image!r}: object names must be strings, got {value!r}")
    return value


def _canonical(vocab: ObjectVocabulary, name: str) -> str:
    return vocab.canonical_of(name) or name.lower()


def load_descriptions(path: str) -> dict[str, str]:
    out = {}
    for line, record in iter_jsonl(path, tolerate_partial_last_line=True):
        where = f"{path}, line {line}"
        key = "image" if "image" in record else "image_id"
        image = require(record, key, (str, int), where)
        text_key = "text" if "text" in record else "caption"
        out[str(image)] = require(record, text_key, str, f"{path}, image {image!r}")
    return out


def score(
    descriptions: dict[str, str], truth: dict[str, set[str]], vocab: ObjectVocabulary, *, paths: dict[str, str]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """CHAIR over the described images; returns the metrics and one detail row per description."""
    mentioned, present, rows = [], [], []
    extended = vocab.extended(sorted({o for objs in truth.values() for o in objs}))
    for image, text in descriptions.items():
        if image not in truth:
            raise EvalDataError(f"{paths['descriptions']}: image {image!r} has no ground truth in {paths['truth']}")
        said = extended.mentions(text)
        mentioned.append(said)
        present.append(truth[image])
        rows.append({"image": image, "mentioned": said, "hallucinated": sorted({m for m in said if m not in truth[image]})})
    return metrics.chair(mentioned, present), rows


def images_to_describe(truth: dict[str, set[str]], num_images: int) -> list[str]:
    """File-name keys (not the numeric duplicates of COCO ids), sorted; the first `num_images` (0 = all)."""
    names = sorted(k for k in truth if not k.isdigit())
    return names[:num_images] if num_images else names


def generate(
    images: list[str],
    answerer: Answerer,
    answers_path: str,
    *,
    image_dir: str,
    prompt: str,
    settings: GenerationSettings,
    model_id: str = "",
    show_progress: bool = True,
) -> int:
    prompts = [Prompt(key=image, text=prompt, image=os.path.join(image_dir, image)) for image in images]
    with JsonlStore(answers_path, "image") as store:
        return answer_prompts(prompts, answerer, store, settings, model_id=model_id, desc="chair", show_progress=show_progress)
