"""Supervised fine-tuning (and projector pretraining) of LLaVA: next-token cross-entropy on the
assistant tokens.

Config groups read here (besides the loop's, see `train.defaults`):
  model.preset            name from `models.config.preset` ("tiny", "small", "llava_7b_224", ...)
  model.overrides         dict passed to `preset(name, **overrides)`; nested `text` / `vision` dicts allowed
  model.vocab_from_tokenizer  set text.vocab_size to the tokenizer's size (toy tokenizers)
  model.image_token_from_tokenizer  use the tokenizer's `<image>` id as `image_token_id`
  model.loss_chunk        > 0: cross-entropy from hidden states, this many positions of logits at a time
                          (never materialises [B, T, vocab] logits; 0 = plain logits)
  lora.rank               0 = full fine-tune; > 0 trains LoRA adapters on a frozen base
  lora.alpha, lora.targets
  init.hf_llava           llava-hf checkpoint dir to start from (all weights)
  init.hf_llm, init.hf_clip   HF LLaMA / CLIP dirs (the reference recipe starts from Vicuna + CLIP)
  init.params_from        workdir of an earlier run (e.g. projector pretraining): its latest params
  data.train, data.eval   sources: [(path, image_folder, weight), ...] (LLaVA JSON / tfds dirs)
  data.tokenizer          tokenizer directory (transformers `from_pretrained`)
  data.template           conversation template ("vicuna_v1" for SFT, "plain" for projector pretraining)
  data.max_text_length    text tokens with the image counted as one token (the reference's 1280);
                          sequences are padded up to max_text_length - 1 + num_image_tokens
  data.shapesworld.num_images  > 0: write a ShapesWorld into WORKDIR/shapesworld and train on it
  data.strict, data.read_threads, data.pad_to_square
Parameter paths (for `trainable` / `frozen` regexes): full fine-tune: `vision/...`,
`projector/...`, `llm/...`; with LoRA: `base/...` and `lora/llm/layers/...`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from fact_rlhf_jax.train.losses import sft_loss_terms, sft_loss_terms_chunked
from fact_rlhf_jax.train.stage import LossTerms, Stage

log = logging.getLogger(__name__)


def model_config(config: ml_collections.ConfigDict, tokenizer=None):
    from fact_rlhf_jax.models import config as mcfg

    overrides = dict(config.model.get("overrides", {}) or {})
    overrides = {k: (dict(v) if isinstance(v, (dict, ml_collections.ConfigDict)) else v) for k, v in overrides.items()}
    if tokenizer is not None and config.model.get("vocab_from_tokenizer", False):
        overrides.setdefault("text", {})["vocab_size"] = len(tokenizer)
    if tokenizer is not None and config.model.get("image_token_from_tokenizer", False):
        image_id = tokenizer.convert_tokens_to_ids("<image>")
        if image_id is None or image_id == tokenizer.unk_token_id:
            raise ValueError(f"{config.data.tokenizer}: tokenizer has no <image> token "
                             "(model.image_token_from_tokenizer is set)")
        overrides["image_token_id"] = int(image_id)
    return mcfg.preset(config.model.preset, **overrides)


def write_shapesworld_split(workdir: str, cfg: ml_collections.ConfigDict) -> dict[str, str]:
    """Writes a ShapesWorld under WORKDIR/shapesworld once and splits its SFT records into train / eval files."""
    from fact_rlhf_jax.shapesworld import write_world

    root = Path(workdir) / "shapesworld"
    done = root / "sft_split.json"
    if not done.exists():
        paths = write_world(root, num_images=int(cfg.num_images), seed=int(cfg.get("seed", 0)),
                            noise=float(cfg.get("noise", 0.0)), image_size=int(cfg.get("image_size", 64)))
        records = json.loads(Path(paths["sft"]).read_text())
        n_eval = max(1, int(len(records) * float(cfg.get("eval_fraction", 0.1))))
        (root / "sft_train.json").write_text(json.dumps(records[:-n_eval]))
        (root / "sft_eval.json").write_text(json.dumps(records[-n_eval:]))
        done.write_text(json.dumps({"images": str(paths["images"]), "tokenizer": str(paths["tokenizer"]),
                                    "train": str(root / "sft_train.json"), "eval": str(root / "sft_eval.json")}))
    return json.loads(done.read_text())


class SFTStage(Stage):
    name = "sft"

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        self.config = config
        self.workdir = workdir
        data = config.data
        self.train_sources = [tuple(s) for s in data.train]
        self.eval_sources = [tuple(s) for s in (data.get("eval", ()) or ())]
        tokenizer_dir = data.tokenizer
        world = data.get("shapesworld", None)
        if world is not None and int(world.get("num_images", 0)) > 0:
            if jax.process_count() > 1:
                raise ValueError("data.shapesworld is for single-host runs; write the world first and point "
                                 "data.train / data.tokenizer at it")
            split = write_shapesworld_split(workdir, world)
            self.train_sources = [(split["train"], split["images"], 1.0)]
            self.eval_sources = [(split["eval"], split["images"], 1.0)]
            tokenizer_dir = split["tokenizer"]
        if not tokenizer_dir:
            raise ValueError("config.data.tokenizer: no tokenizer directory given")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self._set_model(config, self.tokenizer)

    @classmethod
    def model_only(cls, config: ml_collections.ConfigDict) -> "SFTStage":
        """The model and loss side only (no tokenizer, no data): for planning on abstract inputs.

        Without a tokenizer, `model.vocab_from_tokenizer` / `image_token_from_tokenizer` keep the preset's values.
        """
        stage = cls.__new__(cls)
        stage.config, stage.workdir, stage.tokenizer = config, None, None
        stage.train_sources = stage.eval_sources = []
        stage._set_model(config, None)
        return stage

    def _set_model(self, config: ml_collections.ConfigDict, tokenizer) -> None:
        self.model_cfg = model_config(config, tokenizer)
        self.max_length = int(config.data.max_text_length) - 1 + self.model_cfg.num_image_tokens
        self.lora_rank = int(config.lora.rank) if "lora" in config else 0
        if self.lora_rank:
            self.lora_targets = tuple(config.lora.targets)
            self.lora_scale = float(config.lora.alpha) / self.lora_rank
        self._loader = None

    # --- model ------------------------------------------------------------------------------------
    def init_params(self, rng):
        from fact_rlhf_jax.models import llava, lora

        if not self.lora_rank:
            return llava.init(self.model_cfg, rng)
        base_rng, lora_rng = jax.random.split(rng)
        return {"base": llava.init(self.model_cfg, base_rng),
                "lora": lora.init(self.model_cfg, lora_rng, rank=self.lora_rank, targets=self.lora_targets)}

    def param_axes(self):
        from fact_rlhf_jax.models import llava, lora

        if not self.lora_rank:
            return llava.param_axes(self.model_cfg)
        return {"base": llava.param_axes(self.model_cfg),
                "lora": lora.param_axes(self.model_cfg, rank=self.lora_rank, targets=self.lora_targets)}

    def logits(self, params, batch):
        from fact_rlhf_jax.models import llava

        base, adapters = (params["base"], params["lora"]) if self.lora_rank else (params, None)
        out = llava.forward(base, self.model_cfg, batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                            lora=adapters, lora_scale=self.lora_scale if self.lora_rank else 1.0)
        return out.logits

    def loss(self, params, batch, rng) -> LossTerms:
        chunk = int(self.config.model.get("loss_chunk", 0) or 0)
        if not chunk:
            return sft_loss_terms(self.logits(params, batch), batch["labels"])
        from fact_rlhf_jax.models import llava

        base, adapters = (params["base"], params["lora"]) if self.lora_rank else (params, None)
        hidden = llava.hidden_states(base, self.model_cfg, batch["input_ids"], batch["pixel_values"],
                                     batch["attention_mask"], lora=adapters,
                                     lora_scale=self.lora_scale if self.lora_rank else 1.0)
        return sft_loss_terms_chunked(hidden, base["llm"]["lm_head"], batch["labels"], chunk)

    def load_pretrained(self, params, shardings):
        init = self.config.get("init", None)
        if init is None:
            return None
        base_params = params["base"] if self.lora_rank else params
        base_sh = shardings["base"] if self.lora_rank else shardings
        loaded = load_initial_weights(init, base_params, base_sh, self.model_cfg, self.config)
        if loaded is None:
            return None
        return {"base": loaded, "lora": params["lora"]} if self.lora_rank else loaded

    # --- data -------------------------------------------------------------------------------------
    def _build_loader(self, sources, *, process_index, process_count, batch_size, seed, shuffle, num_epochs):
        from fact_rlhf_jax.data.pipeline import build_sft_loader

        data = self.config.data
        return build_sft_loader(
            sources, self.tokenizer,
            image_token_id=self.model_cfg.image_token_id,
            num_image_tokens=self.model_cfg.num_image_tokens,
            image_size=self.model_cfg.vision.image_size,
            template=data.get("template", "vicuna_v1"),
            max_length=self.max_length,
            global_batch_size=batch_size * process_count,
            seed=seed, shuffle=shuffle, num_epochs=num_epochs,
            strict=bool(data.get("strict", False)),
            process_index=process_index, process_count=process_count,
            pad_side="right",
            pad_to_square=bool(data.get("pad_to_square", True)),
            read_threads=int(data.get("read_threads", 4)),
        )

    def train_data(self, *, process_index, process_count, batch_size, seed):
        self._loader = self._build_loader(self.train_sources, process_index=process_index,
                                          process_count=process_count, batch_size=batch_size, seed=seed,
                                          shuffle=True, num_epochs=None)
        return iter(self._loader)

    def eval_data(self, *, process_index, process_count, batch_size):
        if not self.eval_sources:
            return None
        loader = self._build_loader(self.eval_sources, process_index=process_index, process_count=process_count,
                                    batch_size=batch_size, seed=0, shuffle=False, num_epochs=1)
        return iter(loader)

    def num_train_examples(self):
        if self._loader is None:
            return None
        return int(self._loader.num_records)

    def to_global(self, batch, mesh):
        from fact_rlhf_jax.data.pipeline import to_global

        return to_global(batch, mesh, pad_side="right", pad_id=self._loader.pad_id if self._loader else 0)

    def finish(self, workdir, data):
        from fact_rlhf_jax.data.pipeline import write_bad_record_report

        if self._loader is not None:
            write_bad_record_report(self._loader, workdir)


def load_initial_weights(init: ml_collections.ConfigDict, params: dict, shardings: dict, model_cfg, config) -> dict | None:
    """Weights to start from (see the module docstring); None when nothing is configured."""
    from fact_rlhf_jax import hf
    from fact_rlhf_jax.train.loop import make_rules
    from fact_rlhf_jax import sharding as shd

    if init.get("hf_llava", ""):
        mesh = jax.tree.leaves(shardings)[0].mesh
        _, loaded = hf.import_llava(init.hf_llava, param_dtype=model_cfg.param_dtype, mesh=mesh, rules=make_rules(config))
        return _check_and_place(loaded, params, shardings, init.hf_llava)
    out = dict(params)
    changed = False
    if init.get("hf_llm", ""):
        _, llm = hf.import_llama(init.hf_llm, dtype=model_cfg.param_dtype)
        out["llm"] = _check_and_place(llm, params["llm"], shardings["llm"], init.hf_llm)
        changed = True
    if init.get("hf_clip", ""):
        _, vision = hf.import_clip(init.hf_clip, dtype=model_cfg.param_dtype)
        out["vision"] = _check_and_place(vision, params["vision"], shardings["vision"], init.hf_clip)
        changed = True
    if init.get("params_from", ""):
        out = restore_params_from_workdir(init.params_from, out, shardings)
        changed = True
    return out if changed else None


def _check_and_place(loaded, like, shardings, source: str):
    want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), like)
    have = jax.tree.map(lambda x: (tuple(np.shape(x)), str(x.dtype)), loaded)
    if jax.tree.structure(want) != jax.tree.structure(have):
        raise ValueError(f"{source}: parameter tree does not match the configured model")
    bad = [(w, h) for w, h in zip(jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, tuple)),
                                  jax.tree.leaves(have, is_leaf=lambda x: isinstance(x, tuple))) if w[0] != h[0]]
    if bad:
        raise ValueError(f"{source}: parameter shapes differ from the configured model, e.g. expected {bad[0][0]}, "
                         f"got {bad[0][1]}")
    return jax.tree.map(lambda x, s, l: jax.device_put(np.asarray(x).astype(l.dtype) if isinstance(x, np.ndarray) else x.astype(l.dtype), s),
                        loaded, shardings, like)


def restore_params_from_workdir(workdir: str, like: dict, shardings: dict) -> dict:
    """The `params` of the latest checkpoint in another run's workdir, placed in `shardings`."""
    import orbax.checkpoint as ocp

    from fact_rlhf_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(Path(workdir) / "checkpoints", async_save=False)
    step = ckpt.latest_step()
    ckpt.close()
    if step is None:
        raise FileNotFoundError(f"init.params_from={workdir}: no checkpoint under {workdir}/checkpoints")
    target = {"params": jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like, shardings)}
    restore_args = jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding, dtype=t.dtype), target)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(
            Path(workdir).absolute() / "checkpoints" / str(step) / "state",
            args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
        )
    log.info("initial params from %s step %d", workdir, step)
    return restored["params"]


def build_stage(config, workdir):
    return SFTStage(config, workdir)


def plan_programs(config, mesh, rules):
    """`fact-rlhf plan` hook: one train step on the longest padded batch the config allows.

    Rows: `batch_size` (global; the step splits them into `grad_accum` micro-batches); length: the last
    length bucket, `max_text_length - 1 + num_image_tokens`.
    """
    import jax.numpy as jnp

    from fact_rlhf_jax.plan import train_step_program

    stage = SFTStage.model_only(config)
    rows, length, size = int(config.batch_size), stage.max_length, stage.model_cfg.vision.image_size
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    batch = {"input_ids": tokens, "attention_mask": tokens, "labels": tokens,
             "pixel_values": jax.ShapeDtypeStruct((rows, 3, size, size), jnp.float32)}
    accum = int(config.grad_accum)
    what = (f"one optimizer update of {rows} sequences x {length} tokens ({accum} micro-batch"
            f"{'es' if accum > 1 else ''} of {rows // accum}), {config.model.preset}, "
            f"{stage.model_cfg.param_dtype} weights, remat {stage.model_cfg.remat}")
    return [train_step_program(stage, config, mesh, rules, batch, what)]
