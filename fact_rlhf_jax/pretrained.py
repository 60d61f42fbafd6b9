"""Starting points: the one way every stage, command and notebook names and loads a LLaVA model.

A *source* is one of
  - a training workdir of this project (it holds `model.json`, its model card, and `checkpoints/`),
  - a llava-hf `LlavaForConditionalGeneration` directory,
  - an original LLaVA / LLaVA-RLHF `LlavaLlamaForCausalLM` directory: the path, or
    `{"path": DIR, "vision_tower": CLIP_DIR}` when the CLIP tower is separate,
  - `{"llm": VICUNA_DIR, "clip": CLIP_DIR}`: separate HF LLaMA and CLIP directories (the reference recipe's
    start; the projector is not in them, so only SFT can start here: `load_parts`).

    card = describe(source)                    # config + tokenizer, reads no weights
    model = load(source, mesh=mesh)            # LoadedModel: params in their shardings (+ adapter, head)

Each training run writes its model card `WORKDIR/model.json` (`write_card`), so a workdir is itself a
source: an SFT run (full weights in its checkpoints), a LoRA run or a PPO run (a base source + an adapter in
its checkpoints), a reward model (base + adapter + scalar head).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fact_rlhf_jax import hf, paths
from fact_rlhf_jax.models.config import LlavaConfig

log = logging.getLogger(__name__)

CARD_FILE = "model.json"
CARD_FORMAT = 1
KINDS = ("llava", "reward")


class SourceError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """Where a run keeps its LoRA adapter: `path` inside the checkpoint's params, e.g. "lora" or "policy"."""

    path: str
    rank: int
    alpha: float
    targets: tuple[str, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_json(self) -> dict:
        return {"path": self.path, "rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_json(cls, d: Mapping) -> "AdapterSpec":
        return cls(str(d["path"]), int(d["rank"]), float(d["alpha"]), tuple(d["targets"]))


@dataclasses.dataclass(frozen=True)
class Card:
    """What a source is, without its weights.

    kind       "llava" (a generator) or "reward" (adapter + scalar head on a base)
    config     the model configuration
    tokenizer  tokenizer directory
    base       None when the LLaVA weights are in this source itself; else the source they come from
    params_path  for a workdir with `base` None: where the LLaVA tree sits in its checkpoint's params ("" = root)
    adapter    LoRA adapter kept in this workdir's checkpoints (applied on the fly), or None
    head       path of the scalar head in the checkpoint's params (reward models), or None
    extra      stage-specific settings (the reward prompt of a reward model, ...)
    location   the workdir / directory the card describes
    """

    kind: str
    config: LlavaConfig
    tokenizer: str
    base: Any = None
    params_path: str = ""
    adapter: AdapterSpec | None = None
    head: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    location: str = ""

    def to_json(self) -> dict:
        return {
            "format": CARD_FORMAT,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer,
            "base": self.base,
            "params_path": self.params_path,
            "adapter": None if self.adapter is None else self.adapter.to_json(),
            "head": self.head,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, d: Mapping, location: str = "") -> "Card":
        if d.get("kind") not in KINDS:
            raise SourceError(f"{location}/{CARD_FILE}: kind {d.get('kind')!r}; expected one of {KINDS}")
        return cls(kind=d["kind"], config=LlavaConfig.from_dict(d["config"]), tokenizer=d["tokenizer"],
                   base=d.get("base"), params_path=d.get("params_path", ""),
                   adapter=None if not d.get("adapter") else AdapterSpec.from_json(d["adapter"]),
                   head=d.get("head"), extra=dict(d.get("extra") or {}), location=location)


@dataclasses.dataclass
class LoadedModel:
    """A source's weights: `params` is a LLaVA tree; `adapter` (LoRA tree) and `head` ({"w", "b"}) when it has them."""

    card: Card
    params: dict
    adapter: dict | None = None
    head: dict | None = None

    @property
    def cfg(self) -> LlavaConfig:
        return self.card.config

    @property
    def lora_scale(self) -> float:
        return self.card.adapter.scale if self.card.adapter is not None else 1.0

    def merged_params(self) -> dict:
        """The LLaVA params with the adapter folded in (for export, or as the frozen base of a later stage)."""
        from fact_rlhf_jax.models import lora

        return self.params if self.adapter is None else lora.merge(self.params, self.adapter, self.lora_scale)


# --------------------------------------------------------------------------------------------------
# describing


def _as_source(source: Any) -> Any:
    """Normalises a source: a path string, or a plain dict (ConfigDicts and Paths accepted)."""
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    if isinstance(source, str):
        if not source:
            raise SourceError("empty model source")
        return source
    if hasattr(source, "to_dict"):
        source = source.to_dict()
    if isinstance(source, Mapping):
        out = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in source.items() if v not in (None, "")}
        if set(out) - {"path", "vision_tower", "llm", "clip"}:
            raise SourceError(f"model source {dict(source)}: unknown keys; expected path (+ vision_tower) or llm + clip")
        if len(out) == 1 and "path" in out:
            return out["path"]
        return out
    raise SourceError(f"model source {source!r}: expected a directory path or a dict")


def absolute(source: Any) -> Any:
    """A source spec with its paths made absolute, so a model card written here works from any directory."""
    source = _as_source(source)
    if isinstance(source, str):
        return paths.absolute(source)
    return {k: paths.absolute(v) if isinstance(v, str) and v else v for k, v in source.items()}


def is_workdir(path: str | os.PathLike) -> bool:
    path = paths.local_or_url(path)
    return (path / CARD_FILE).exists() or ((path / "config.json").exists() and (path / "checkpoints").exists())


def describe(source: Any, *, param_dtype: str | None = None) -> Card:
    """The card of a source (reads config files only). `param_dtype` overrides the weights' dtype (and compute
    dtype) of HF sources and of workdirs."""
    source = _as_source(source)
    if isinstance(source, dict):
        if "llm" in source:
            raise SourceError(f"model source {source}: separate LLaMA + CLIP directories have no projector; "
                              "only the SFT stage starts there (init.hf_llm / init.hf_clip)")
        path, tower = source["path"], source.get("vision_tower")
    else:
        path, tower = source, None
    p = paths.local_or_url(path)
    if not p.exists():
        raise SourceError(f"model source {path}: no such directory")
    if is_workdir(p):
        card = _workdir_card(p)
    elif paths.is_url(path):
        raise SourceError(f"model source {path}: on a bucket only training workdirs ({CARD_FILE}) are read; copy a "
                          "Hugging Face or original LLaVA checkpoint to a local disk")
    elif hf.is_llava_dir(p):
        card = Card("llava", hf.read_llava_config(p), tokenizer=str(p), location=str(p))
    elif hf.is_original_llava_dir(p):
        card = Card("llava", hf.read_original_llava_config(p, vision_tower=tower), tokenizer=str(p),
                    base=None, extra={"vision_tower": tower} if tower else {}, location=str(p))
    else:
        raise SourceError(f"model source {path}: neither a training workdir ({CARD_FILE} or config.json + "
                          "checkpoints/), a llava-hf checkpoint (config.json with vision_config) nor an original "
                          "LLaVA checkpoint (config.json with mm_vision_tower)")
    if param_dtype:
        card = dataclasses.replace(card, config=card.config.replace(param_dtype=param_dtype, compute_dtype=param_dtype))
    return card


def _workdir_card(workdir) -> Card:
    path = workdir / CARD_FILE
    if path.exists():
        return Card.from_json(json.loads(path.read_text()), location=str(workdir))
    return _legacy_sft_card(workdir)


def _legacy_sft_card(workdir) -> Card:
    """Workdirs of SFT runs written before model cards existed: rebuild the card from config.json."""
    import ml_collections
    from transformers import AutoTokenizer

    from fact_rlhf_jax.train import sft

    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    if config.get("stage", "sft") != "sft":
        raise SourceError(f"{workdir}: no {CARD_FILE} and not an SFT run; cannot tell what model it holds")
    tok_dir = config.data.get("tokenizer", "")
    split_file = workdir / "shapesworld" / "sft_split.json"
    if not tok_dir and split_file.exists():
        tok_dir = json.loads(split_file.read_text())["tokenizer"]
    if not tok_dir:
        raise SourceError(f"{workdir}/config.json: data.tokenizer is empty")
    cfg = sft.model_config(config, AutoTokenizer.from_pretrained(str(tok_dir)))
    rank = int(config.lora.rank) if "lora" in config else 0
    adapter = AdapterSpec("lora", rank, float(config.lora.alpha), tuple(config.lora.targets)) if rank else None
    return Card("llava", cfg, str(tok_dir), params_path="base" if rank else "", adapter=adapter,
                location=str(workdir))


def write_card(workdir: str | os.PathLike, card: Card):
    """Writes `WORKDIR/model.json` (process 0 only; WORKDIR local or on a bucket)."""
    path = paths.workdir(workdir) / CARD_FILE
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.write_atomic(path, json.dumps(card.to_json(), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# loading


def _shardings(cfg: LlavaConfig, mesh, rules):
    from fact_rlhf_jax import sharding
    from fact_rlhf_jax.models import llava

    mesh = mesh if mesh is not None else sharding.single_device_mesh()
    return llava.param_shardings(cfg, mesh, rules or sharding.Rules.create()), mesh


def load(source: Any, *, mesh=None, rules=None, param_dtype: str | None = None, with_adapter: bool = True,
         with_base: bool = True) -> LoadedModel:
    """Loads a source's weights, each tensor straight into its sharding on `mesh` (one device by default).

    A workdir whose card names a `base` loads that base first (recursively) and its own adapter / head from
    its latest checkpoint. `with_adapter=False` skips the adapter; `with_base=False` loads only the adapter and
    head (`params` is None), for a base already held by the caller.
    """
    card = describe(source, param_dtype=param_dtype)
    cfg = card.config
    shardings, mesh = _shardings(cfg, mesh, rules)
    location = paths.local_or_url(card.location)
    if not with_base:
        params = None
    elif card.base is not None:
        base = load(card.base, mesh=mesh, rules=rules, param_dtype=param_dtype or cfg.param_dtype)
        # the base's own adapter (a LoRA SFT run as a base) is part of the base here
        params = base.merged_params()
    elif is_workdir(location):
        params = restore_subtrees(location, {card.params_path: (_llava_shapes(cfg), shardings)})[card.params_path]
    elif hf.is_llava_dir(location):
        _, params = hf.import_llava(location, param_dtype=cfg.param_dtype, compute_dtype=cfg.compute_dtype,
                                    mesh=mesh, rules=rules)
    else:
        _, params = hf.import_llava_original(location, vision_tower=card.extra.get("vision_tower"),
                                             dtype=cfg.param_dtype)
        params = jax.tree.map(jax.device_put, params, shardings)
    wanted = {}
    if card.adapter is not None and with_adapter:
        wanted[card.adapter.path] = _adapter_shapes_and_shardings(cfg, card.adapter, mesh, rules)
    if card.head is not None:
        wanted[card.head] = _head_shapes_and_shardings(cfg, mesh)
    restored = restore_subtrees(location, wanted) if wanted else {}
    adapter = restored.get(card.adapter.path) if card.adapter is not None and with_adapter else None
    return LoadedModel(card if with_adapter else dataclasses.replace(card, adapter=None), params, adapter,
                       restored.get(card.head) if card.head else None)


# --------------------------------------------------------------------------------------------------
# planning: what `load` would place, without reading anything


def planning_card(source: Any, preset: str, *, preset_key: str, param_dtype: str | None = None,
                  kind: str = "llava", adapter: AdapterSpec | None = None) -> Card:
    """The card of a starting point for `fact-rlhf plan`: `describe(source)` when the source is readable here,
    else a card built from the model preset `preset` (the config key `preset_key` names it; weights' and compute
    dtype overridden by `param_dtype`), with `adapter` (and a scalar head "head" for kind "reward") standing in
    for what the source would hold."""
    from fact_rlhf_jax.models import config as mcfg

    if _readable(source):
        return describe(source, param_dtype=param_dtype)
    if not preset:
        raise SourceError(f"model source {source!r} is not readable here and config.{preset_key} names no model "
                          f"preset to plan with (e.g. --config.{preset_key}=llava_13b_336)")
    cfg = mcfg.preset(preset)
    if param_dtype:
        cfg = cfg.replace(param_dtype=param_dtype, compute_dtype=param_dtype)
    return Card(kind, cfg, tokenizer="", adapter=adapter, head="head" if kind == "reward" else None,
                extra={"preset": preset})


def _readable(source: Any) -> bool:
    try:
        source = _as_source(source)
    except SourceError:
        return False
    path = source.get("path", "") if isinstance(source, dict) else source
    if not path:
        return False
    try:
        return paths.local_or_url(path).exists()
    except Exception:  # a bucket without its client library or credentials here: plan from the preset
        log.info("%s: not readable here", path, exc_info=True)
        return False


def abstract_llava(cfg: LlavaConfig, mesh, rules) -> dict:
    """The LLaVA params `load` places on `mesh`: ShapeDtypeStructs with their shardings."""
    shardings, _ = _shardings(cfg, mesh, rules)
    return _with_shardings(_llava_shapes(cfg), shardings)


def abstract_adapter(cfg: LlavaConfig, spec: AdapterSpec, mesh, rules) -> dict:
    return _with_shardings(*_adapter_shapes_and_shardings(cfg, spec, mesh, rules))


def abstract_head(cfg: LlavaConfig, mesh) -> dict:
    return _with_shardings(*_head_shapes_and_shardings(cfg, mesh))


def _with_shardings(shapes, shardings):
    from fact_rlhf_jax.train.state import abstract_with_shardings

    return abstract_with_shardings(shapes, shardings)


def _llava_shapes(cfg: LlavaConfig):
    from fact_rlhf_jax.models import llava

    return llava.param_shapes(cfg)


def _adapter_shapes_and_shardings(cfg, spec: AdapterSpec, mesh, rules):
    from fact_rlhf_jax import sharding
    from fact_rlhf_jax.models import lora

    shapes = lora.param_shapes(cfg, rank=spec.rank, targets=spec.targets)
    axes = lora.param_axes(cfg, rank=spec.rank, targets=spec.targets)
    return shapes, sharding.shardings_for(shapes, axes, mesh, rules or sharding.Rules.create())


def _head_shapes_and_shardings(cfg, mesh):
    from fact_rlhf_jax import sharding
    from fact_rlhf_jax.models import heads

    shapes = heads.param_shapes(cfg.text.hidden_size)
    return shapes, sharding.shardings_for(shapes, heads.param_axes(), mesh, sharding.Rules.create())


def _nest(path: str, value):
    for part in reversed([p for p in path.split("/") if p]):
        value = {part: value}
    return value


def _get(tree, path: str):
    for part in [p for p in path.split("/") if p]:
        tree = tree[part]
    return tree


def restore_subtrees(workdir: str | os.PathLike, wanted: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Restores parts of the latest checkpoint's `params` of a training run, each straight into its shardings.

    wanted: {path inside params ("" = all of it, "lora", "policy", "value/head", ...): (shapes, shardings)}.
    """
    import orbax.checkpoint as ocp

    from fact_rlhf_jax.train.checkpoint import Checkpointer

    workdir = paths.workdir(workdir)
    ckpt = Checkpointer(workdir / "checkpoints", async_save=False)
    step = ckpt.latest_step()
    ckpt.close()
    if step is None:
        raise SourceError(f"{workdir}: no checkpoint under {workdir}/checkpoints")
    target: dict = {}
    for path, (shapes, shardings) in wanted.items():
        like = _with_shardings(shapes, shardings)
        sub = _nest(path, like)
        if not path:
            target = sub
        else:
            _deep_update(target, sub)
    target = {"params": target}
    restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding, dtype=t.dtype), target)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(
            workdir / "checkpoints" / str(step) / "state",
            args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
        )
    log.info("restored %s from %s step %d", sorted(wanted), workdir, step)
    return {path: _get(restored["params"], path) for path in wanted}


def _deep_update(into: dict, new: dict) -> None:
    for k, v in new.items():
        if k in into and isinstance(into[k], dict) and isinstance(v, dict):
            _deep_update(into[k], v)
        else:
            into[k] = v


def load_parts(llm_dir: str | None, clip_dir: str | None, params: dict, shardings: dict, *, dtype: str) -> dict:
    """`params` with the LLM and / or the vision tower replaced by HF LLaMA / CLIP checkpoints (the reference
    SFT recipe starts from Vicuna + CLIP; the projector keeps its initialisation)."""
    out = dict(params)
    if llm_dir:
        _, llm = hf.import_llama(llm_dir, dtype=dtype)
        out["llm"] = place_checked(llm, params["llm"], shardings["llm"], llm_dir)
    if clip_dir:
        _, vision = hf.import_clip(clip_dir, dtype=dtype)
        out["vision"] = place_checked(vision, params["vision"], shardings["vision"], clip_dir)
    return out


def place_checked(loaded, like, shardings, source: str):
    """`loaded` cast to `like`'s dtypes and placed in `shardings`, after checking it has `like`'s tree and shapes."""
    want = jax.tree.map(lambda x: tuple(x.shape), like)
    have = jax.tree.map(lambda x: tuple(np.shape(x)), loaded)
    if jax.tree.structure(want) != jax.tree.structure(have):
        raise SourceError(f"{source}: parameter tree does not match the configured model")
    is_shape = lambda x: isinstance(x, tuple)
    for w, h in zip(jax.tree.leaves(want, is_leaf=is_shape), jax.tree.leaves(have, is_leaf=is_shape)):
        if w != h:
            raise SourceError(f"{source}: parameter shapes differ from the configured model, e.g. expected {w}, got {h}")
    return jax.tree.map(lambda x, s, l: jax.device_put(np.asarray(x).astype(l.dtype), s), loaded, shardings, like)
