"""`fact-rlhf demo`: the end-to-end ShapesWorld run (world -> SFT -> evaluation -> report); see docs/demo.md.

    config.py    sizes (`FULL`, `SMOKE`) and the stage configs
    world.py     the demo world and its SFT split
    evaluate.py  every metric of one model on the held-out eval images
    pipeline.py  stages, done files, progress lines
    stages.py    the stage list
    report.py    results.json, results.md, figures
"""
