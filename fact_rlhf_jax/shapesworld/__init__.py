"""ShapesWorld: a procedurally generated multimodal world in the file formats of the real
LLaVA-RLHF data, with exact scene graphs, a simulated annotator and hallucination metrics.

    from fact_rlhf_jax.shapesworld import write_world
    paths = write_world("/tmp/sw", num_images=200, seed=0, noise=0.1)

See docs/shapesworld.md.
"""

from fact_rlhf_jax.shapesworld.writer import write_world

__all__ = ["write_world"]
