"""Data plumbing of the stages that train on preference pairs (the reward model, DPO).

A subclass sets `train_sources`, `train_rows`, `eval_sources`, `eval_rows` (the held-out split of
`data.preference.held_out_split`) and `pad_side`, and defines `_loader_for(sources, rows, *, process_index,
process_count, batch_size, seed, shuffle, num_epochs, pad_final_batch=False) -> pipeline.Loader`; this class
turns that into the loop's train and eval iterators, the record count, the global batches and the bad-record
report.
"""

from __future__ import annotations

from fact_rlhf_jax.train.stage import Stage


class PairDataStage(Stage):
    pad_side = "right"
    _loader = None

    def _loader_for(self, sources, rows, *, process_index, process_count, batch_size, seed, shuffle, num_epochs,
                    pad_final_batch=False):
        raise NotImplementedError

    def train_data(self, *, process_index, process_count, batch_size, seed):
        self._loader = self._loader_for(self.train_sources, self.train_rows, process_index=process_index,
                                        process_count=process_count, batch_size=batch_size, seed=seed,
                                        shuffle=True, num_epochs=None)
        return iter(self._loader)

    def eval_data(self, *, process_index, process_count, batch_size):
        if not self.eval_sources:
            return None
        loader = self._loader_for(self.eval_sources, self.eval_rows, process_index=process_index,
                                  process_count=process_count, batch_size=batch_size,
                                  seed=int(self.config.data.split_seed), shuffle=False, num_epochs=1,
                                  pad_final_batch=True)
        return iter(loader)

    def num_train_examples(self):
        return None if self._loader is None else int(self._loader.num_records)

    def to_global(self, batch, mesh):
        from fact_rlhf_jax.data.pipeline import to_global

        return to_global(batch, mesh, pad_side=self.pad_side, pad_id=self._loader.pad_id if self._loader else 0)

    def finish(self, workdir, data):
        from fact_rlhf_jax.data.pipeline import write_bad_record_report

        if self._loader is not None:
            write_bad_record_report(self._loader, workdir)
