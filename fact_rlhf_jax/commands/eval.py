"""`fact-rlhf eval {pope,mmhal,llava-bench,chair}`: answer a benchmark with a checkpoint, or score answers.

Every benchmark has two modes. Given answers in the benchmark's own format (`--answers`, `--responses`,
`--descriptions`) it only scores them; otherwise it loads `--checkpoint` (or config.checkpoint), answers
every question (resuming from the answers file in --out-dir) and scores the result. Results go to
`<out-dir>/results.json` and `<out-dir>/results.md`. Formats and config keys: docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fact_rlhf_jax.config import ConfigError
from fact_rlhf_jax.eval import chair_eval, generation, llava_bench, mmhal, pope
from fact_rlhf_jax.eval.config import add_config_arguments, config_from_args
from fact_rlhf_jax.eval.judge import ChatJudge, JudgeFatalError, JudgeSettings, load_template
from fact_rlhf_jax.eval.objects import DEFAULT_SYNONYMS, ObjectVocabulary
from fact_rlhf_jax.eval.records import EvalDataError, write_json
from fact_rlhf_jax.eval.report import markdown_table, save_results
from fact_rlhf_jax.eval.rule_judge import RuleJudge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub.required = True

    p = sub.add_parser("pope", help="POPE yes/no object existence (accuracy, precision, recall, F1, yes-ratio)")
    p.add_argument("--questions", action="append", required=True, metavar="Q.jsonl",
                   help="question file (repeat for several splits; split = suffix of coco_pope_<split>.jsonl)")
    p.add_argument("--answers", action="append", metavar="A.jsonl",
                   help="score these answers (question_id, text), one per --questions in the same order")
    p.add_argument("--out", metavar="M.json", help="score-only: write the metrics here")
    _add_common(p, "pope")

    p = sub.add_parser("mmhal", help="MMHal-Bench (judge score 0-6, hallucination rate)")
    p.add_argument("--template", metavar="T.json", help="the 96-record template to answer with --checkpoint")
    p.add_argument("--responses", metavar="R.json", help="score this responses file (template format, model_answer filled)")
    p.add_argument("--judge", choices=("chat", "rule", "shapesworld"), help="override config.judge.kind")
    p.add_argument("--scene-graphs", metavar="SG.json",
                   help="ShapesWorld scene_graphs.json for --judge shapesworld (overrides config.judge.scene_graphs)")
    p.add_argument("--rejudge", action="store_true", help="judge again even if the file already has judge_response")
    _add_common(p, "mmhal")

    p = sub.add_parser("llava-bench", help="LLaVA-Bench COCO qa90 (relative score against reference answers)")
    p.add_argument("--questions", required=True, metavar="Q.jsonl")
    p.add_argument("--references", required=True, metavar="REF.jsonl", help="reference answers (qa90_gpt4_answer.jsonl)")
    p.add_argument("--context", required=True, metavar="CTX.jsonl", help="captions and boxes per image")
    p.add_argument("--answers", metavar="A.jsonl", help="score these answers (question_id, text)")
    _add_common(p, "llava_bench")

    p = sub.add_parser("chair", help="CHAIR object hallucination of image descriptions")
    p.add_argument("--truth", required=True, metavar="GT.json",
                   help="COCO instances JSON or per-image object lists (JSON or JSONL)")
    p.add_argument("--descriptions", metavar="D.jsonl", help="score these descriptions (image, text)")
    _add_common(p, "chair")


def _add_common(p: argparse.ArgumentParser, benchmark: str) -> None:
    p.add_argument("--checkpoint", help="model to answer with (HF llava directory or training workdir)")
    p.add_argument("--image-dir", help="image folder (overrides config.image_dir)")
    p.add_argument("--out-dir", default=None,
                   help=f"answers, judgements and results.{{json,md}} (default: eval_results/{benchmark}; "
                   "pope with --answers and --out writes only --out unless --out-dir is given)")
    p.add_argument("--model-id", default="", help="name stored with each generated answer")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, benchmark)


def run(args: argparse.Namespace) -> int:
    handlers = {"pope": _run_pope, "mmhal": _run_mmhal, "llava-bench": _run_llava_bench, "chair": _run_chair}
    pope_metrics_only = args.benchmark == "pope" and args.answers and args.out
    if args.out_dir is None and not pope_metrics_only:
        args.out_dir = os.path.join("eval_results", args.benchmark.replace("-", "_"))
    try:
        return handlers[args.benchmark](args)
    except (EvalDataError, JudgeFatalError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------


def _settings(cfg: Any) -> generation.GenerationSettings:
    return generation.GenerationSettings(
        max_new_tokens=int(cfg.max_new_tokens), temperature=float(cfg.temperature),
        conv_mode=str(cfg.conv_mode), batch_size=int(cfg.batch_size),
    )


def _answerer(args: argparse.Namespace, cfg: Any) -> generation.Answerer:
    kwargs: dict[str, Any] = {"batch_size": int(cfg.batch_size), "seed": int(cfg.seed)}
    if cfg.tokenizer:
        kwargs["tokenizer"] = cfg.tokenizer
    return generation.load_answerer(args.checkpoint or cfg.checkpoint, **kwargs)


def _image_dir(args: argparse.Namespace, cfg: Any) -> str:
    image_dir = args.image_dir or cfg.image_dir
    if not image_dir:
        raise EvalDataError("no image folder: pass --image-dir or set config.image_dir")
    return image_dir


def _settings_record(cfg: Any, mode: str) -> dict[str, Any]:
    """The config as run (no secrets: only the name of the key's variable is in the config)."""
    return {"mode": mode} | {k: v for k, v in cfg.to_dict().items() if k not in ("judge",)} | (
        {"judge": {k: v for k, v in cfg.judge.to_dict().items() if k != "api_key_env"}} if "judge" in cfg else {}
    )


def _make_judge(cfg: Any, *, allow_rule: bool, system: str | None = None, labels: Any = ()):
    j = cfg.judge
    if j.kind == "shapesworld":
        if not allow_rule:
            raise JudgeFatalError("the ShapesWorld judge exists only for MMHal-Bench; use config.judge.kind=chat")
        if not j.get("scene_graphs", ""):
            raise EvalDataError("--judge shapesworld needs the world's scene graphs: pass --scene-graphs "
                                "WORLD/scene_graphs.json or set config.judge.scene_graphs")
        from fact_rlhf_jax.shapesworld.judge import ShapesWorldJudge

        return ShapesWorldJudge.from_file(j.scene_graphs)
    if j.kind == "rule":
        if not allow_rule:
            raise JudgeFatalError("the rule judge exists only for MMHal-Bench; use config.judge.kind=chat")
        synonyms = cfg.get("synonyms") or DEFAULT_SYNONYMS
        return RuleJudge(ObjectVocabulary.from_file(synonyms), benchmark_labels=labels)
    if j.kind != "chat":
        raise JudgeFatalError(f"config.judge.kind must be 'chat', 'rule' or 'shapesworld', got {j.kind!r}")
    settings = JudgeSettings(
        base_url=j.base_url, model=j.model, api_key=os.environ.get(j.api_key_env, "") if j.api_key_env else "",
        temperature=float(j.temperature), max_tokens=int(j.max_tokens), timeout_s=float(j.timeout_s),
        max_retries=int(j.max_retries), backoff_s=float(j.backoff_s), backoff_max_s=float(j.backoff_max_s),
    )
    return ChatJudge(settings, system=system)


def _report_failures(failed: dict[Any, str], what: str) -> int:
    if not failed:
        return 0
    first = next(iter(failed))
    print(
        f"{len(failed)} {what} could not be judged (first: {first!r}: {failed[first]}); "
        "rerun the same command to send only those",
        file=sys.stderr,
    )
    return 1


# ---------------------------------------------------------------------------------------------------


def _run_pope(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "pope")
    splits = [pope.split_name(q) for q in args.questions]
    if len(set(splits)) != len(splits):
        raise EvalDataError(f"two question files share a split name: {', '.join(args.questions)}")
    if args.answers and len(args.answers) != len(args.questions):
        raise EvalDataError(f"{len(args.answers)} --answers files for {len(args.questions)} --questions files")
    answer_paths = args.answers or [os.path.join(args.out_dir, f"pope_{s}_answers.jsonl") for s in splits]
    questions = {s: pope.load_questions(q) for s, q in zip(splits, args.questions)}
    if not args.answers:
        answerer, image_dir = _answerer(args, cfg), _image_dir(args, cfg)
        for split, path in zip(splits, answer_paths):
            pope.generate(
                questions[split], answerer, path, image_dir=image_dir, prompt_suffix=cfg.prompt_suffix,
                settings=_settings(cfg), model_id=args.model_id, show_progress=not args.no_progress, desc=f"pope {split}",
            )
    per_split = {s: pope.score(questions[s], pope.load_answers(a), a) for s, a in zip(splits, answer_paths)}
    rows = dict(per_split)
    if len(per_split) > 1:
        rows["average"] = pope.average(per_split)
    if args.out_dir:
        table = save_results(args.out_dir, "pope", rows, pope.METRIC_KEYS, "split", settings=_settings_record(cfg, "score" if args.answers else "generate"))
    else:
        table = markdown_table(rows, pope.METRIC_KEYS, "split")
    print(table)
    if args.out:
        write_json(args.out, per_split[splits[0]] if len(splits) == 1 else rows)
    return 0


def _run_mmhal(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "mmhal")
    if args.judge:
        cfg.judge.kind = args.judge
    if args.scene_graphs:
        cfg.judge.scene_graphs = args.scene_graphs
    if bool(args.template) == bool(args.responses):
        raise EvalDataError("pass exactly one of --template (answer with a checkpoint) or --responses (score answers)")
    responses_path = args.responses
    if args.template:
        responses_path = mmhal.generate(
            args.template, _answerer(args, cfg), args.out_dir, image_dir=_image_dir(args, cfg),
            settings=_settings(cfg), model_id=args.model_id, show_progress=not args.no_progress,
        )
    records = mmhal.load_records(responses_path, need_answers=True)
    already_judged = all(isinstance(r.get("judge_response"), str) for r in records)
    failures = 0
    if args.rejudge or not already_judged:
        judge = _make_judge(cfg, allow_rule=True, labels=[l for r in records for l in r["image_content"]])
        records, judge_run = mmhal.judge_records(
            records, judge, load_template(cfg.judge_template), os.path.join(args.out_dir, "mmhal_judgements.jsonl"),
            retry_unparsed=int(cfg.judge.retry_unparsed), show_progress=not args.no_progress,
        )
        write_json(os.path.join(args.out_dir, "mmhal_judged.json"), records)
        failures = _report_failures(judge_run.failed, "records")
        if failures:
            return failures
    rows = mmhal.summarize(records, responses_path)
    notes = []
    if rows["overall"]["unparsed"]:
        notes.append(f"{rows['overall']['unparsed']} reviews had no single 'rating: N' and count as 0 (reference rule)")
    table = save_results(
        args.out_dir, "mmhal", rows, mmhal.COLUMNS, "question type",
        settings=_settings_record(cfg, "generate" if args.template else "score"), notes=notes,
    )
    print(table)
    return 0


def _run_llava_bench(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "llava_bench")
    questions = llava_bench.load_questions(args.questions)
    answers_path = args.answers or os.path.join(args.out_dir, "llava_bench_answers.jsonl")
    if not args.answers:
        llava_bench.generate(
            questions, _answerer(args, cfg), answers_path, image_dir=_image_dir(args, cfg), settings=_settings(cfg),
            model_id=args.model_id, show_progress=not args.no_progress,
        )
    judge = _make_judge(cfg, allow_rule=False, system=cfg.judge_system or None)
    rows, judge_run = llava_bench.judge_answers(
        questions, llava_bench.load_answers(answers_path), llava_bench.load_answers(args.references),
        llava_bench.load_context(args.context), judge, load_template(cfg.judge_template),
        llava_bench.load_rules(cfg.judge_rules), os.path.join(args.out_dir, "llava_bench_reviews.jsonl"),
        paths={"answers": answers_path, "references": args.references, "context": args.context},
        retry_unparsed=int(cfg.judge.retry_unparsed), show_progress=not args.no_progress,
    )
    failures = _report_failures(judge_run.failed, "questions")
    if failures:
        return failures
    results = llava_bench.summarize(rows)
    notes = [f"{results['all']['unparsed']} reviews without two scores on the first line are left out"] if results["all"]["unparsed"] else []
    table = save_results(
        args.out_dir, "llava_bench", results, llava_bench.COLUMNS, "category",
        settings=_settings_record(cfg, "score" if args.answers else "generate"), notes=notes,
    )
    print(table)
    return 0


def _run_chair(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, "chair")
    vocab = ObjectVocabulary.from_file(cfg.synonyms or DEFAULT_SYNONYMS)
    truth = chair_eval.load_ground_truth(args.truth, vocab)
    descriptions_path = args.descriptions or os.path.join(args.out_dir, "chair_answers.jsonl")
    if not args.descriptions:
        chair_eval.generate(
            chair_eval.images_to_describe(truth, int(cfg.num_images)), _answerer(args, cfg), descriptions_path,
            image_dir=_image_dir(args, cfg), prompt=cfg.prompt, settings=_settings(cfg), model_id=args.model_id,
            show_progress=not args.no_progress,
        )
    result, details = chair_eval.score(
        chair_eval.load_descriptions(descriptions_path), truth, vocab,
        paths={"descriptions": descriptions_path, "truth": args.truth},
    )
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "chair_details.jsonl"), "w", encoding="utf-8") as f:
        for row in details:
            f.write(json.dumps(row) + "\n")
    table = save_results(
        args.out_dir, "chair", {"all": result}, chair_eval.COLUMNS, "descriptions",
        settings=_settings_record(cfg, "score" if args.descriptions else "generate"),
    )
    print(table)
    return 0
