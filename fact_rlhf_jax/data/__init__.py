"""Data layer: LLaVA records -> templates + tokenisation -> images -> grain batches (see docs/data.md)."""
