"""Direct preference optimisation (DPO) of LLaVA on preference pairs, through the shared loop.

For a pair (x, y_w, y_l) (prompt with its image, chosen and rejected response) let

    π_w = log π_θ(y_w | x),   π_l = log π_θ(y_l | x)        the policy's sequence log-probs
    ρ_w = log π_ref(y_w | x), ρ_l = log π_ref(y_l | x)      the frozen reference's
    h   = (π_w − ρ_w) − (π_l − ρ_l)

with log-probs summed over the response tokens only (the last assistant reply and its `</s>`, see
`data.dpo_pairs`), or averaged over them with `dpo.average_log_probs`. The loss of one pair (`dpo.loss`):

    sigmoid            L = −log σ(β h)                                 DPO (Rafailov et al. 2023, eq. 7)
    sigmoid, ε > 0     L = −(1 − ε) log σ(β h) − ε log σ(−β h)          conservative DPO: the label is taken as
                                                                       flipped with probability ε
                                                                       (`dpo.label_smoothing`)
    ipo                L = (h − 1 / (2β))²                             IPO (Azar et al. 2023, eq. 17)

averaged over the pairs of the global batch (`total` = sum over pairs, `weight` = pairs). Implicit rewards
r_w = β (π_w − ρ_w), r_l = β (π_l − ρ_l). Metrics (means over pairs; the same as `eval/...` on the held-out
split): `accuracy` = mean[r_w > r_l], `rewards_chosen`, `rewards_rejected`, `margin` = r_w − r_l,
`logps_chosen` = π_w, `logps_rejected` = π_l.

Policy and reference:
  lora.rank > 0   the policy is a LoRA adapter (`lora`, the only state params) on a frozen base held once,
                  outside the checkpoints (`Stage.frozen_params`: `base`). The base is the starting point with
                  its own adapter, when it has one, merged in; the reference is that base without the new
                  adapter, i.e. the starting point itself.
  lora.rank = 0   full fine-tuning (`trainable` selects what trains, e.g. `llm/.*`); the state params are the
                  whole LLaVA, starting from the starting point; the reference is a frozen copy of it.
Either way the reference log-probs are computed once per pair, by one pass over the data before the first
step, and stored in the workdir (`train.reference_logps`); training batches carry them and the step runs
only the policy. A resumed run reads them back instead of running the reference again.

Config (`default_config()`; configs/dpo/*.py):
  init.model            starting point (`fact_rlhf_jax.pretrained`): SFT / DPO workdir, llava-hf dir, original
                        LLaVA dir or {"path", "vision_tower"}; empty + data.shapesworld.num_images > 0: a
                        ShapesWorld and a tiny SFT model are prepared inside the workdir
  init.param_dtype      dtype of the loaded weights ("" = the source's; "bfloat16" halves the base's memory)
  init.preset           the starting point's model preset (`models.config.preset`), for `fact-rlhf plan` where
                        init.model is not readable
  model.remat           "" = the source's; "full" / "dots" rematerialise layers in the backward pass
  model.loss_chunk      > 0: log-probs from hidden states, that many positions of logits at a time
  lora.rank, lora.alpha, lora.targets    rank 0 = full fine-tuning
  dpo.loss              "sigmoid" or "ipo"; dpo.beta; dpo.label_smoothing (ε, sigmoid only);
  dpo.average_log_probs per-token means instead of sums (TRL's IPO uses means)
  data.train            [(preference.json, image_folder, weight)]; data.eval: held-out sources, or empty to
                        split data.eval_size pairs off the (single) training source with data.split_seed
  data.tokenizer        "" = the starting point's; data.template (vicuna_v1); data.max_text_length: tokens of a
                        sequence with the image counted as one; data.length_buckets: None = powers of two,
                        () = always the maximum length
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fact_rlhf_jax.train.pair_data import PairDataStage
from fact_rlhf_jax.train.sft import SFTStage
from fact_rlhf_jax.train.stage import LossTerms

log = logging.getLogger(__name__)

LOSSES = ("sigmoid", "ipo")


def default_config() -> ml_collections.ConfigDict:
    """Every DPO key with its default (RLAIF-V's LoRA recipe where it has one; configs/dpo/*.py start here)."""
    from fact_rlhf_jax.train.defaults import base_config

    c = base_config()
    c.stage = "dpo"
    c.init = ml_collections.ConfigDict(dict(model="", param_dtype="", preset=""))
    c.model = ml_collections.ConfigDict(dict(remat="", loss_chunk=0))
    c.lora = ml_collections.ConfigDict(dict(rank=64, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))
    c.dpo = ml_collections.ConfigDict(dict(loss="sigmoid", beta=0.1, label_smoothing=0.0, average_log_probs=False))
    c.trainable = ("lora/.*",)
    c.data = ml_collections.ConfigDict(dict(
        train=[], eval=[], tokenizer="", template="vicuna_v1", max_text_length=2048, length_buckets=None,
        eval_size=500, split_seed=42, strict=False, read_threads=4, pad_to_square=True,
        shapesworld=dict(num_images=0, seed=0, noise=0.0, image_size=56, label_noise=0.0),
        sft_overrides={},  # dotted SFT config keys -> values for the tiny SFT model prepared in the workdir
    ))
    c.batch_size = 8
    c.optim.lr = 1e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.05
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.checkpoint.every = 200
    c.eval_every = 200
    return c


# --- the loss --------------------------------------------------------------------------------------


def dpo_loss_terms(policy: jax.Array, reference: jax.Array, valid: jax.Array, *, beta: float,
                   loss: str = "sigmoid", label_smoothing: float = 0.0) -> LossTerms:
    """policy, reference float32 [B, 2] (chosen, rejected) sequence log-probs, valid [B] -> LossTerms over pairs
    (formulas in the module docstring)."""
    if loss not in LOSSES:
        raise ValueError(f"dpo.loss={loss!r}; expected one of {LOSSES}")
    v = valid.astype(jnp.float32)
    policy = policy.astype(jnp.float32)
    reference = reference.astype(jnp.float32)
    chosen_ratio = policy[:, 0] - reference[:, 0]
    rejected_ratio = policy[:, 1] - reference[:, 1]
    h = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        per_pair = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    else:
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    rewards_chosen, rewards_rejected = beta * chosen_ratio, beta * rejected_ratio
    n = v.sum()

    def mean(x):
        return ((v * x).sum(), n)

    metrics = {
        "accuracy": mean((rewards_chosen > rewards_rejected).astype(jnp.float32)),
        "rewards_chosen": mean(rewards_chosen),
        "rewards_rejected": mean(rewards_rejected),
        "margin": mean(rewards_chosen - rewards_rejected),
        "logps_chosen": mean(policy[:, 0]),
        "logps_rejected": mean(policy[:, 1]),
    }
    return LossTerms(total=(v * per_pair).sum(), weight=n, metrics=metrics)


def sequence_logps(params: dict, cfg, batch: dict, *, lora: dict | None = None, lora_scale: float = 1.0,
                   loss_chunk: int = 0) -> tuple[jax.Array, jax.Array]:
    """Sum of log p(label) over each sequence's supervised positions.

    batch: input_ids / attention_mask / labels [B, 2, T], pixel_values [B, 3, H, W] (shared by both sequences
    of a pair). Returns (log-probs float32 [B, 2], supervised token counts float32 [B, 2])."""
    from fact_rlhf_jax.models import llava
    from fact_rlhf_jax.train.losses import shifted_token_nll, shifted_token_nll_chunked

    b, two, t = batch["input_ids"].shape
    ids = batch["input_ids"].reshape(b * two, t)
    mask = batch["attention_mask"].reshape(b * two, t)
    labels = batch["labels"].reshape(b * two, t)
    pixels = jnp.repeat(batch["pixel_values"], two, axis=0)
    if loss_chunk:
        hidden = llava.hidden_states(params, cfg, ids, pixels, mask, lora=lora, lora_scale=lora_scale)
        nll, valid, _ = shifted_token_nll_chunked(hidden, params["llm"]["lm_head"], labels, loss_chunk)
    else:
        logits = llava.forward(params, cfg, ids, pixels, mask, lora=lora, lora_scale=lora_scale).logits
        nll, valid, _ = shifted_token_nll(logits, labels)
    logps = -nll.sum(axis=1).reshape(b, two)
    return logps, valid.astype(jnp.float32).sum(axis=1).reshape(b, two)


# --- the stage -------------------------------------------------------------------------------------


class DPOStage(PairDataStage):
    name = "dpo"
    pad_side = "right"

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.data import preference
        from fact_rlhf_jax.train.reward import shapesworld_start

        self.config = config
        self.workdir = workdir
        data = config.data
        self._check_dpo_settings(config.dpo)
        source = config.init.model
        train_sources = [tuple(s) for s in data.train]
        eval_sources = [tuple(s) for s in (data.get("eval", ()) or ())]
        if not _given(source) and int(data.shapesworld.get("num_images", 0)) > 0:
            source, world = shapesworld_start(config, workdir)
            train_sources = train_sources or [(world["preference"], world["images"], 1.0)]
        if not _given(source):
            raise ValueError("config.init.model: no starting point (an SFT workdir or a LLaVA checkpoint directory)")
        if not train_sources:
            raise ValueError("config.data.train: no preference file")
        self.source = source
        card = pretrained.describe(source, param_dtype=config.init.get("param_dtype", "") or None)
        self._set_model(config, card)
        self.tokenizer_dir = data.tokenizer or card.tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        self.train_sources = train_sources
        self.train_rows, self.eval_rows, self.eval_sources = preference.held_out_split(
            train_sources, eval_sources, int(data.eval_size), int(data.split_seed))
        self._tables: dict[str, np.ndarray] | None = None
        self._start_params = None
        self.reference_passes = 0  # reference tables computed by this process (not read back)
        adapter = (pretrained.AdapterSpec("lora", self.lora_rank, float(config.lora.alpha), self.lora_targets)
                   if self.lora_rank else None)
        pretrained.write_card(workdir, pretrained.Card(
            "llava", self.model_cfg, str(Path(self.tokenizer_dir).absolute()),
            base=pretrained.absolute(source) if self.lora_rank else None, adapter=adapter,
            extra={"stage": "dpo", "conv_template": data.template}))

    @classmethod
    def for_planning(cls, config: ml_collections.ConfigDict) -> "DPOStage":
        """The model and loss side only (no tokenizer, data or weights), for `fact-rlhf plan`: the starting point
        is `init.model` when readable here, else the model preset `init.preset`."""
        from fact_rlhf_jax import pretrained

        cls._check_dpo_settings(config.dpo)
        stage = cls.__new__(cls)
        stage.config, stage.workdir, stage.source = config, None, config.init.model
        stage._set_model(config, pretrained.planning_card(config.init.model, config.init.get("preset", ""),
                                                          preset_key="init.preset",
                                                          param_dtype=config.init.get("param_dtype", "") or None))
        return stage

    def _set_model(self, config: ml_collections.ConfigDict, card) -> None:
        if card.kind != "llava":
            raise ValueError(f"config.init.model={config.init.model!r}: a {card.kind} model; DPO starts from a "
                             "generator (an SFT or DPO run, or a LLaVA checkpoint)")
        remat = config.model.get("remat", "")
        self.model_cfg = card.config.replace(remat=remat) if remat else card.config
        self.lora_rank = int(config.lora.rank)
        self.lora_targets = tuple(config.lora.targets)
        self.lora_scale = float(config.lora.alpha) / self.lora_rank if self.lora_rank else 1.0
        if not self.lora_rank and tuple(config.trainable) == ("lora/.*",):
            raise ValueError("lora.rank=0 trains the whole model: set trainable to the LLaVA paths to train, "
                             "e.g. --config.trainable='llm/.*' (add 'projector/.*' for the projector)")
        self.max_length = int(config.data.max_text_length) - 1 + self.model_cfg.num_image_tokens

    @staticmethod
    def _check_dpo_settings(dpo):
        if dpo.loss not in LOSSES:
            raise ValueError(f"config.dpo.loss={dpo.loss!r}; expected one of {LOSSES}")
        if not float(dpo.beta) > 0:
            raise ValueError(f"config.dpo.beta={dpo.beta}: must be > 0")
        if not 0.0 <= float(dpo.label_smoothing) < 0.5:
            raise ValueError(f"config.dpo.label_smoothing={dpo.label_smoothing}: must be in [0, 0.5)")
        if dpo.loss == "ipo" and float(dpo.label_smoothing):
            raise ValueError("config.dpo.label_smoothing applies to the sigmoid loss, not to ipo")

    # --- model ------------------------------------------------------------------------------------
    # The state's params are SFT's: the whole LLaVA (lora.rank 0), or {"lora": adapter} with the base frozen
    # outside the state (both read model_cfg, lora_rank, lora_targets).
    init_params = SFTStage.init_params
    param_axes = SFTStage.param_axes

    def _load_start(self, mesh, rules) -> dict:
        """The starting point's LLaVA params (its own adapter merged in), in their shardings on `mesh`."""
        from fact_rlhf_jax import pretrained

        return pretrained.load(self.source, mesh=mesh, rules=rules,
                               param_dtype=self.model_cfg.param_dtype).merged_params()

    def frozen_params(self, mesh, rules):
        """LoRA: the frozen base. Both modes: the reference log-probs of every pair are ready afterwards."""
        if self.lora_rank:
            base = self._load_start(mesh, rules)
            self._prepare_reference(lambda: base, mesh, rules)
            return {"base": base}
        # full fine-tuning: the frozen copy is needed only for the reference pass; keep it as the policy's start
        self._start_params = self._prepare_reference(lambda: self._load_start(mesh, rules), mesh, rules)
        return None

    def abstract_frozen(self, mesh, rules):
        if not self.lora_rank:
            return None
        from fact_rlhf_jax import pretrained

        return {"base": pretrained.abstract_llava(self.model_cfg, mesh, rules)}

    def load_pretrained(self, params, shardings):
        if self.lora_rank:
            return None  # a fresh adapter (B = 0): the policy starts equal to the reference
        from fact_rlhf_jax import pretrained

        start = self._start_params
        self._start_params = None
        if start is None:
            mesh = jax.tree.leaves(shardings)[0].mesh
            from fact_rlhf_jax.train.loop import make_rules

            start = self._load_start(mesh, make_rules(self.config))
        want = jax.tree.map(lambda x: (x.shape, x.dtype), params)
        have = jax.tree.map(lambda x: (x.shape, x.dtype), start)
        if want != have:
            raise pretrained.SourceError(f"{self.source}: parameter tree does not match the configured model")
        return jax.tree.map(jax.device_put, start, shardings)

    def loss(self, params, batch, rng) -> LossTerms:
        dpo = self.config.dpo
        base, adapter = (params["base"], params["lora"]) if self.lora_rank else (params, None)
        logps, tokens = sequence_logps(base, self.model_cfg, batch, lora=adapter, lora_scale=self.lora_scale,
                                       loss_chunk=int(self.config.model.get("loss_chunk", 0) or 0))
        reference = batch["ref_logps"]
        if dpo.average_log_probs:
            tokens = jnp.maximum(tokens, 1.0)
            logps, reference = logps / tokens, reference / tokens
        return dpo_loss_terms(logps, reference, batch["valid"], beta=float(dpo.beta), loss=dpo.loss,
                              label_smoothing=float(dpo.label_smoothing))

    # --- reference log-probs ------------------------------------------------------------------------
    def _data_fingerprint(self, path: str) -> dict:
        from fact_rlhf_jax.train import reference_logps

        data, cfg = self.config.data, self.model_cfg
        return {"file": str(Path(path).absolute()), "sha256": reference_logps.file_digest(path),
                "tokenizer": str(Path(self.tokenizer_dir).absolute()), "template": data.template,
                "max_length": self.max_length, "image_size": cfg.vision.image_size,
                "pad_to_square": bool(data.pad_to_square), "image_token_id": cfg.image_token_id,
                "loss_chunk": int(self.config.model.get("loss_chunk", 0) or 0)}

    def _prepare_reference(self, load_model, mesh, rules):
        """Reads or computes the reference table of every data file; returns the reference params if it had to
        load them (None when every table was already in the workdir)."""
        from fact_rlhf_jax.data.sources import parse_sources
        from fact_rlhf_jax.train import reference_logps

        model = reference_logps.model_identity(self.source, self.model_cfg.param_dtype)
        specs = {s.path: s for s in parse_sources(self.train_sources + list(self.eval_sources))}
        params, tables = None, {}
        for path, spec in specs.items():
            fingerprint = {"model": model, "data": self._data_fingerprint(path)}
            n = self._num_records(spec)
            table = reference_logps.load_table(self.workdir, fingerprint, n)
            if table is None:
                params = params if params is not None else load_model()
                log.info("reference log-probs: one pass over the %d records of %s", n, path)
                table = self._reference_pass(params, spec, n, mesh, rules)
                saved = reference_logps.save_table(self.workdir, fingerprint, table)
                self.reference_passes += 1
                log.info("reference log-probs of %s -> %s (%d skipped)", path, saved, int(np.isnan(table[:, 0]).sum()))
            else:
                log.info("reference log-probs of %s: found in %s", path, self.workdir)
            tables[path] = table
        self._tables = tables
        return params

    @staticmethod
    def _num_records(spec) -> int:
        from fact_rlhf_jax.data.sources import open_source

        return len(open_source(spec))

    def reference_rows(self, mesh, process_count: int) -> int:
        """Rows per host of a reference-pass batch: `eval_batch_size` (or `batch_size / grad_accum`) rounded up to
        fill this host's data-parallel devices."""
        from fact_rlhf_jax import sharding as shd

        rows = int(self.config.eval_batch_size) if self.config.eval_batch_size > 0 else (
            int(self.config.batch_size) // int(self.config.grad_accum))
        dp_local = max(1, shd.data_parallel_size(mesh) // process_count)
        return -(-max(1, rows // process_count) // dp_local) * dp_local

    def reference_logps_fn(self, mesh, rules):
        """The jitted reference pass `f(reference_params, batch) -> (record ids, log-probs [B, 2])`, replicated."""
        from jax.sharding import NamedSharding, PartitionSpec

        from fact_rlhf_jax import sharding as shd

        replicated = NamedSharding(mesh, PartitionSpec())
        chunk = int(self.config.model.get("loss_chunk", 0) or 0)

        def logps(reference_params, batch):
            with shd.use_mesh(mesh, rules):
                out, _ = sequence_logps(reference_params, self.model_cfg, batch, loss_chunk=chunk)
            return batch["record"], out

        return jax.jit(logps, out_shardings=(replicated, replicated))

    def _reference_pass(self, params, spec, num_records: int, mesh, rules) -> np.ndarray:
        from fact_rlhf_jax.train import reference_logps

        process_count = jax.process_count()
        every_record = np.stack([np.zeros(num_records, np.int64), np.arange(num_records)], axis=1)
        loader = self._loader_for([spec], every_record, process_index=jax.process_index(),
                                  process_count=process_count, batch_size=self.reference_rows(mesh, process_count),
                                  seed=0, shuffle=False, num_epochs=1, pad_final_batch=True, with_reference=False)
        jitted = self.reference_logps_fn(mesh, rules)

        def run(host_batch):
            record, out = jitted(params, self.to_global(host_batch, mesh))
            return np.asarray(record), np.asarray(out)

        table = reference_logps.compute_table(run, iter(loader), num_records)
        if loader.bad_records:
            log.warning("reference pass over %s skipped %s", spec.path, loader.bad_records)
        return table

    def _reference_lookup(self, sources):
        from fact_rlhf_jax.data.sources import parse_sources

        paths = [s.path for s in parse_sources(sources)]

        def lookup(s: int, i: int) -> np.ndarray:
            if self._tables is None:
                raise RuntimeError("DPO batches were read before the reference log-probs were prepared")
            value = self._tables[paths[s]][i]
            if np.isnan(value).any():
                raise RuntimeError(f"{paths[s]}, record {i}: no reference log-probs (the reference pass skipped "
                                   f"it); delete {self.workdir}/reference_logps to recompute them")
            return value

        return lookup

    # --- data -------------------------------------------------------------------------------------
    def _loader_for(self, sources, rows, *, process_index, process_count, batch_size, seed, shuffle, num_epochs,
                    pad_final_batch=False, with_reference=True):
        from fact_rlhf_jax.data.dpo_pairs import build_dpo_loader

        data = self.config.data
        buckets = data.get("length_buckets", None)
        return build_dpo_loader(
            sources, self.tokenizer, template=data.template, image_token_id=self.model_cfg.image_token_id,
            num_image_tokens=self.model_cfg.num_image_tokens, image_size=self.model_cfg.vision.image_size,
            max_length=self.max_length, global_batch_size=batch_size * process_count, seed=seed, rows=rows,
            shuffle=shuffle, num_epochs=num_epochs, strict=bool(data.strict), process_index=process_index,
            process_count=process_count, length_buckets=None if buckets is None else tuple(buckets),
            pad_to_square=bool(data.pad_to_square), read_threads=int(data.read_threads),
            pad_final_batch=pad_final_batch, reference=self._reference_lookup(sources) if with_reference else None)


def _given(source) -> bool:
    """A starting point is named: a non-empty path, or a {"path", ...} group with a path."""
    if hasattr(source, "to_dict"):
        source = source.to_dict()
    return bool(source.get("path") or source.get("llm")) if isinstance(source, dict) else bool(source)


def build_stage(config, workdir):
    return DPOStage(config, workdir)


def plan_programs(config, mesh, rules):
    """`fact-rlhf plan` hook: the reference pass (once per pair, before training; forward only) and one train
    step, both on pairs padded to the longest length, `max_text_length - 1 + num_image_tokens`."""
    from fact_rlhf_jax import pretrained
    from fact_rlhf_jax.data import dpo_pairs
    from fact_rlhf_jax.plan import Program, collated_spec, sharded_batch, train_step_program

    stage = DPOStage.for_planning(config)
    cfg, length, accum = stage.model_cfg, stage.max_length, int(config.grad_accum)

    def pairs(rows):
        return collated_spec(lambda ex: dpo_pairs.collate_dpo(ex, buckets=(length,), pad_id=0),
                             dpo_pairs.filler_pair(cfg.vision.image_size, 0), rows)

    ref_rows = stage.reference_rows(mesh, 1)
    ref_batch = sharded_batch(pairs(ref_rows), mesh)
    reference = pretrained.abstract_llava(cfg, mesh, rules)
    model = f"{cfg.text.num_layers}-layer LLaVA, {cfg.param_dtype} weights, remat {cfg.remat}"
    ref_program = Program("reference_pass", f"reference log-probs of {ref_rows} pairs x 2 x {length} tokens "
                          f"(forward only), {model}", stage.reference_logps_fn(mesh, rules),
                          (reference, ref_batch), {"reference weights": reference, "batch": ref_batch})
    trains = f"LoRA r{stage.lora_rank} on the frozen" if stage.lora_rank else "the whole (trainable paths of the)"
    rows = int(config.batch_size)
    what = (f"one optimizer update of {rows} pairs x 2 x {length} tokens ({accum} micro-batch"
            f"{'es' if accum > 1 else ''} of {rows // accum}), {trains} {model}")
    return [ref_program, train_step_program(stage, config, mesh, rules, pairs(rows), what)]
