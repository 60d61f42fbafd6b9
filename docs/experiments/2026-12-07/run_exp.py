"""usage: run_exp.py BASE EXP 'python-expr of overrides dict' reuse1,reuse2 only1,only2
Reuses BASE's finished stage dirs (symlinks), runs the listed stages of the demo with FULL replaced by overrides."""
import dataclasses, os, sys
from pathlib import Path
from fact_rlhf_jax.demo import config as C
from fact_rlhf_jax.demo.pipeline import run_stages
from fact_rlhf_jax.demo.stages import stages

base, exp = Path(sys.argv[1]), Path(sys.argv[2])
over = eval(sys.argv[3], {"C": C, "dataclasses": dataclasses})
reuse_spec = [s for s in sys.argv[4].split(",") if s]
reuse = [s.split("=")[0] for s in reuse_spec]
only = [s for s in sys.argv[5].split(",") if s]
settings = dataclasses.replace(C.FULL, **over)
exp.mkdir(parents=True, exist_ok=True)
for spec in reuse_spec:
    name, _, src = spec.partition("=")
    if not (exp / name).exists():
        os.symlink(Path(src) if src else base / name, exp / name)
sel = [s for s in stages() if s.name in reuse + only or s.always]
run_stages(exp, settings, sel)
